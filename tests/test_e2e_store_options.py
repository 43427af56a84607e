"""Store options, end to end: multipart uploads, checksums, encryption, tags, Object
Lock, key templates and the gzip codec, against SeaweedFS."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.daemon import run_cli
from tests.support.faultproxy import FaultProxy
from tests.support.producers import run_writer
from tests.support.store import assert_exact, decompress, parse_ndjson, s3_keys

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def write_incompressible(path: Path, count: int, size: int) -> None:
    """Lines that zstd cannot shrink much (random hex), so a batch's object is large."""
    with path.open("w") as f:
        for seq in range(count):
            f.write(f'{{"seq": {seq}, "message": "{os.urandom(size // 2).hex()}"}}\n')


@pytest.mark.timeout(600)
def test_a_multipart_batch_interrupted_by_a_crash_arrives_whole_and_verified(
    tmp_path: Path, store: dict[str, Any], proxy: FaultProxy
) -> None:
    seaweed = store["seaweed"]
    client = seaweed.client()
    bucket = f"t-lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    shipping = Shipping(
        tmp_path,
        sink="s3",
        seaweed=seaweed,
        bucket=bucket,
        endpoint_url=proxy.endpoint_url,
        # The first batch is cut by size at 14 MiB; the rest is sealed by age.
        # Random hex is slow to scan for secrets, and there are none to find.
        batch_max_bytes="14MiB",
        batch_max_age_secs=20.0,
        extra_toml="[redact]\nenabled = false\n",
        sink_toml=(
            'multipart_threshold = "5MiB"\n'
            'multipart_part_size = "5MiB"\n'
            'checksum_algorithm = "SHA256"\n'
            'storage_class = "STANDARD"\n'
            'server_side_encryption = "AES256"\n'
            'tags = { team = "agents", retention = "legal" }\n'
            'object_lock_mode = "GOVERNANCE"\n'
            "object_lock_retain_days = 1\n"
            'key_template = "{env}/%Y/%m/%d/{source}/{host}/{fingerprint}-{start}-{end}"\n'
            'key_fields = { env = "prod" }\n'
        ),
    )
    total = 6000
    write_incompressible(shipping.logs / "app.log", total, 2600)  # 15.6 MB
    # The store writes the second part, but its answer never reaches the daemon:
    # it is killed while waiting, leaving an unfinished multipart upload behind.
    proxy.only = "partNumber=2"
    proxy.queue("hold")
    shipping.daemon.start()
    try:
        assert proxy.holding.wait(60), shipping.daemon.log_tail()
        shipping.daemon.kill9()
        proxy.only = None
        shipping.daemon.start()
        shipping.wait_delivered(total)
        assert shipping.daemon.terminate() == ExitCode.OK
    finally:
        shipping.daemon.close()
    assert_exact(shipping.delivered(), range(total))
    # The interrupted upload was aborted, not leaked.
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    keys = s3_keys(client, bucket, "e2e/")
    assert keys and all(k.startswith("e2e/prod/20") and "/app/" in k for k in keys)
    sizes = []
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        sizes.append(head["ContentLength"])
        assert head["ContentType"] == "application/x-ndjson"
        assert head["ContentEncoding"] == "zstd"
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ObjectLockMode"] == "GOVERNANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert timedelta(hours=23) < until - datetime.now(timezone.utc) <= timedelta(days=1)
        tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert {t["Key"]: t["Value"] for t in tags} == {"team": "agents", "retention": "legal"}
        # Read back: the body decodes to exactly what the metadata's SHA-256 names.
        body = decompress(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert hashlib.sha256(body).hexdigest() == head["Metadata"]["shipper-sha256"]
        assert len(parse_ndjson(body)) == int(head["Metadata"]["shipper-lines"])
    assert max(sizes) > 5 * MiB  # at least one object went up in parts
    assert proxy.injected["hold"] == 1
    log = shipping.daemon.log_text()
    assert log.count('"message":"started"') == 2


def test_gzip_codec_into_the_directory_sink(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", sink_toml='codec = "gzip"\n')
    run_writer(shipping.logs / "app.log", 0, 3000)
    with shipping.daemon:
        shipping.finish(3000)
    objects = [p for p in shipping.shipped.rglob("*") if p.is_file()]
    assert objects and all(p.name.endswith(".ndjson.gz") for p in objects)
    assert all(p.read_bytes()[:2] == b"\x1f\x8b" for p in objects)
    # No temp file left beside the objects.
    assert not [p for p in shipping.shipped.rglob(".*")]
    # Provenance in extended attributes, where the filesystem has them.
    try:
        names = os.listxattr(objects[0])
    except OSError:
        names = []
    if names or "no extended attributes" not in shipping.daemon.log_text():
        for path in objects:
            body = decompress(path.read_bytes())
            assert os.getxattr(path, "user.shipper-sha256").decode() == (
                hashlib.sha256(body).hexdigest()
            )
            lines = int(os.getxattr(path, "user.shipper-lines"))
            assert lines == len(parse_ndjson(body))


def test_check_config_refuses_a_key_template_without_the_range(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", sink_toml='key_template = "{source}/%Y/{start}"\n')
    checked = run_cli(["check-config", "-c", str(shipping.config)])
    assert checked.returncode == ExitCode.CONFIG_INVALID
    assert "sink.key_template: must contain {host}, {fingerprint}, {end}" in checked.stderr
