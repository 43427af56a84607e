"""The daemon's own output never carries a secret: not a value expanded from the
environment, not a URL's userinfo, not a query string of a request URL.

Secrets are planted where an operator might put them (``${VAR}`` in a bad value and
in good ones, a password in the store's URL) and the daemon's log, ``check-config``,
``/status``, ``/readyz`` and ``/metrics`` are searched for them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.daemon import ShipperProcess, run_cli
from tests.support.faultproxy import FaultProxy
from tests.support.producers import run_writer
from tests.support.store import assert_exact, wait_for

pytestmark = pytest.mark.e2e

DB_PASSWORD = "hunter2-db-password"
TEAM = "team-Secret-7f3a9c"
TAG = "tag-Secret-0d1e2f"
URL_PASSWORD = "s3cr3t-url-pass"
SECRETS = (DB_PASSWORD, TEAM, TAG, URL_PASSWORD)


def assert_no_secret(text: str, where: str) -> None:
    found = [s for s in SECRETS if s in text]
    assert not found, f"{found} in {where}:\n{text[-3000:]}"


BAD_CONFIG = """
state_dir = "{state}"
[sources.app]
include = ["{logs}/*.log"]
[sink]
type = "s3"
bucket = "logs"
codec = "${{DB_PASSWORD}}"
endpoint_url = "http://admin:{url_password}@127.0.0.1:8333"
key_template = "{{team}}/{{source}}/{{host}}/{{fingerprint}}-{{start}}-{{end}}"
key_fields = {{ team = "${{TEAM}}/x" }}
tags = {{ owner = "${{TAG}}" }}
[health]
listen = "${{DB_PASSWORD}}"
"""


def test_config_errors_name_the_key_never_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "shipper.toml"
    config.write_text(
        BAD_CONFIG.format(state=tmp_path / "state", logs=tmp_path, url_password=URL_PASSWORD)
    )
    env = {"DB_PASSWORD": DB_PASSWORD, "TEAM": TEAM, "TAG": TAG}
    checked = run_cli(["check-config", "-c", str(config)], env=env)
    assert checked.returncode == ExitCode.CONFIG_INVALID
    lines = checked.stderr.splitlines()
    for expected in (
        'sink.codec: must be one of "zstd", "gzip", got a value from ${DB_PASSWORD}',
        "sink.endpoint_url: must not contain credentials (user:password@); credentials come"
        " from boto3's default chain",
        'health.listen: expected "host:port", got a value from ${DB_PASSWORD}',
        "sink.key_template: ",  # the static field's "/", its value hidden
    ):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    assert_no_secret(checked.stdout + checked.stderr, "check-config's output")
    ran = run_cli(["run", "-c", str(config)], env=env, timeout=60)
    assert ran.returncode == ExitCode.CONFIG_INVALID
    assert '"invalid config"' in ran.stderr and "sink.endpoint_url" in ran.stderr
    assert_no_secret(ran.stdout + ran.stderr, "the daemon's log")


@dataclass
class EndpointFromEnvironment(Shipping):
    """No ``endpoint_url`` in the config: boto3 takes it from ``AWS_ENDPOINT_URL_S3``,
    where nothing stops an operator from writing a password into it."""

    def _toml(self) -> str:
        lines = super()._toml().splitlines()
        return "\n".join(line for line in lines if not line.startswith("endpoint_url")) + "\n"


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body: bytes = answer.read()
    except urllib.error.HTTPError as exc:  # /readyz answers 503 while uploads fail
        body = exc.read()
    return body.decode()


def test_failed_uploads_with_secrets_in_their_urls_log_none_of_them(
    tmp_path: Path, store: dict[str, Any], proxy: FaultProxy
) -> None:
    # Every batch goes up in parts, and the first parts' connections are reset: the
    # error then quotes the part's URL, with its userinfo, the upload id in its query
    # string, and a key holding a value from the environment.
    shipping = EndpointFromEnvironment(
        tmp_path,
        **store,
        sink_toml=(
            "multipart_threshold = 1\n"
            'key_template = "{team}/source={source}/host={host}/{fingerprint}-{start}-{end}"\n'
            'key_fields = { team = "${TEAM}" }\n'
            'tags = { owner = "${TAG}" }\n'
        ),
    )
    shipping.daemon = ShipperProcess(
        shipping.config,
        tmp_path,
        {
            **store["seaweed"].env(),
            "AWS_ENDPOINT_URL_S3": f"http://admin:{URL_PASSWORD}@127.0.0.1:{proxy.port}",
            "TEAM": TEAM,
            "TAG": TAG,
        },
        extra_args=["--log-level", "DEBUG"],
    )
    proxy.only = "partNumber="
    proxy.queue("reset", "reset")
    run_writer(shipping.logs / "app.log", 0, 300)
    with shipping.daemon:
        shipping.wait_delivered(300)
        wait_for(lambda: not proxy.queued, 60, message="both resets met")
        for page in ("/status", "/readyz", "/metrics"):
            assert_no_secret(fetch(shipping.health_url(page)), page)
        shipping.finish(300)
    assert proxy.injected["reset"] == 2
    log = shipping.daemon.log_text()
    assert "upload failed; retrying" in log
    # The failure was logged with its URL, shorn of what it must not show.
    assert "@127.0.0.1" in log and "[hidden]" in log and "[value of ${TEAM}]" in log
    assert_no_secret(log, "the daemon's log")
    assert "uploadId=" not in log and "admin:" not in log
    # The objects do hold the key field and the tag: they are data, not our output.
    client = store["seaweed"].client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=store["bucket"])["Contents"]]
    assert keys and all(k.startswith(f"e2e/{TEAM}/") for k in keys)
    tags = client.get_object_tagging(Bucket=store["bucket"], Key=keys[0])["TagSet"]
    assert tags == [{"Key": "owner", "Value": TAG}]
    assert_exact(shipping.delivered(), range(300))
