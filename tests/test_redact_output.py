"""What the daemon prints about itself never carries a URL's credentials, a presigned
query string or a value expanded from the environment."""

from __future__ import annotations

import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from shipper.logs import JsonLineFormatter
from shipper.redact_output import HIDDEN, MIN_HIDDEN_CHARS, OutputScrubber, hide_url_secrets

PRESIGNED = (
    "https://logs.s3.amazonaws.com/app/x.ndjson.zst?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=0badc0ffee"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'Could not connect to the endpoint URL: "http://admin:s3cr3t@127.0.0.1:9/b/k"',
            f'Could not connect to the endpoint URL: "http://{HIDDEN}@127.0.0.1:9/b/k"',
        ),
        (
            'endpoint URL: "http://127.0.0.1:9/b/k?uploadId=SECRET&partNumber=1"',
            f'endpoint URL: "http://127.0.0.1:9/b/k?{HIDDEN}"',
        ),
        (
            f"GET {PRESIGNED} failed",
            f"GET https://logs.s3.amazonaws.com/app/x.ndjson.zst?{HIDDEN} failed",
        ),
        # A password with an unescaped "/", "?", "#" or "@" is hidden whole.
        ("http://u:pa/ss@host/k", f"http://{HIDDEN}@host/k"),
        ("http://u:pa?ss@host/k", f"http://{HIDDEN}@host/k"),
        ("http://u:pa#ss@host/k", f"http://{HIDDEN}@host/k"),
        ("http://u:p@ss@host/k", f"http://{HIDDEN}@host/k"),
        ("https://host/k#frag", f"https://host/k?{HIDDEN}"),
        # urllib3 names the request without its host.
        (
            "Max retries exceeded with url: /b/k?uploads=&token=x (Caused by X)",
            f"Max retries exceeded with url: /b/k?{HIDDEN} (Caused by X)",
        ),
        (
            "a http://x:1@h/ and b https://h2/p?q=1",
            f"a http://{HIDDEN}@h/ and b https://h2/p?{HIDDEN}",
        ),
        # Nothing to hide: unchanged.
        (
            "s3://logs/app/source=a/x.ndjson.zst: HTTP 500",
            "s3://logs/app/source=a/x.ndjson.zst: HTTP 500",
        ),
        ("http://127.0.0.1:8333/bucket/key", "http://127.0.0.1:8333/bucket/key"),
        ("no url here? user@example", "no url here? user@example"),
        ("", ""),
    ],
)
def test_url_secrets_are_hidden(text: str, expected: str) -> None:
    assert hide_url_secrets(text) == expected


def test_hidden_urls_keep_nothing_of_the_secret() -> None:
    for secret_url in (PRESIGNED, "http://AKIA:wJalrXUtnFEMI@s3.example.com/b?x=1"):
        shown = hide_url_secrets(f"boom: {secret_url}")
        assert "0badc0ffee" not in shown and "AKIAEXAMPLE" not in shown
        assert "wJalrXUtnFEMI" not in shown


def test_values_from_the_environment_are_named_by_their_variable() -> None:
    scrubber = OutputScrubber({"hunter2-db-password": "DB_PASSWORD", "eu": "REGION"})
    text = scrubber.text("key team=hunter2-db-password/x in eu")
    assert text == "key team=[value of ${DB_PASSWORD}]/x in eu"  # "eu" is too short to hide
    assert len("eu") < MIN_HIDDEN_CHARS


def test_percent_encoded_forms_are_hidden_too() -> None:
    scrubber = OutputScrubber({"p@ss/w rd!": "PW"})
    url = (
        'endpoint URL: "http://h/b/p%40ss%2Fw%20rd%21/k" and p%40ss/w%20rd%21 and p%40ss%2Fw+rd%21'
    )
    assert "p%40ss" not in scrubber.text(url)
    assert "[value of ${PW}]" in scrubber.text(url)


def test_the_longest_value_wins() -> None:
    scrubber = OutputScrubber({"abcd": "SHORT", "abcdefgh": "LONG"})
    assert scrubber.text("abcdefgh abcd") == "[value of ${LONG}] [value of ${SHORT}]"


def test_hide_adds_values_and_keeps_the_earlier_ones() -> None:
    scrubber = OutputScrubber()
    assert scrubber.text("secret-one") == "secret-one"
    scrubber.hide({"secret-one": "A"})
    scrubber.hide({"secret-two": "B"})
    assert scrubber.text("secret-one secret-two") == "[value of ${A}] [value of ${B}]"


@dataclass
class _Note:
    path: Path
    count: int


def test_data_scrubs_every_string_keys_included() -> None:
    scrubber = OutputScrubber({"s3cr3t-value": "S"})
    data = {
        "files": [{"path": "/logs/s3cr3t-value/app.log", "size": 3, "stale": False}],
        "s3cr3t-value": None,
        "tuple": ("http://u:pw@h/", 1.5),
        "note": _Note(Path("/x/s3cr3t-value"), 2),
    }
    assert scrubber.data(data) == {
        "files": [{"path": "/logs/[value of ${S}]/app.log", "size": 3, "stale": False}],
        "[value of ${S}]": None,
        "tuple": [f"http://{HIDDEN}@h/", 1.5],
        "note": {"path": "/x/[value of ${S}]", "count": 2},
    }


def _formatted(scrubber: OutputScrubber, emit: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter(scrubber))
    logger = logging.getLogger("test_redact_output")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    assert callable(emit)
    emit(logger)
    # json, not orjson: a line with a file name that is not UTF-8 escapes a lone surrogate.
    result: dict[str, object] = json.loads(stream.getvalue())
    return result


def test_log_lines_hide_secrets_in_message_fields_and_traceback() -> None:
    scrubber = OutputScrubber({"hunter2-db-password": "DB_PASSWORD"})

    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError('endpoint URL: "http://u:hunter2@h/b/k?uploadId=abc"')
        except ValueError:
            logger.error(
                "upload failed for hunter2-db-password",
                exc_info=sys.exc_info(),
                extra={
                    "key": "team=hunter2-db-password/x",
                    "nested": {"e": ["hunter2-db-password"]},
                },
            )

    line = _formatted(scrubber, emit)
    text = orjson.dumps(line).decode()
    assert "hunter2" not in text and "uploadId" not in text
    assert line["message"] == "upload failed for [value of ${DB_PASSWORD}]"
    assert line["key"] == "team=[value of ${DB_PASSWORD}]/x"
    assert f"http://{HIDDEN}@h/b/k?{HIDDEN}" in str(line["exception"])


def test_log_lines_that_are_not_utf8_still_come_out() -> None:
    line = _formatted(
        OutputScrubber(), lambda logger: logger.warning("x", extra={"path": "/l/\udce9"})
    )
    assert line["message"] == "x"


def test_a_value_that_is_not_utf8_is_hidden_too() -> None:
    scrubber = OutputScrubber({"caf\udce9-secret": "KEY"})
    assert scrubber.text("x caf\udce9-secret y caf%E9-secret") == (
        "x [value of ${KEY}] y [value of ${KEY}]"
    )


def test_an_escaped_value_is_hidden_too() -> None:
    scrubber = OutputScrubber({'pa"ss\\word': "PW"})
    label = 'shipper_x{path="/l/pa\\"ss\\\\word"} 1.0'  # as Prometheus escapes it
    assert scrubber.text(label) == 'shipper_x{path="/l/[value of ${PW}]"} 1.0'
