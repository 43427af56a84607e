"""The chain as the daemon builds it: parse, sample, enrich, redact, encode."""

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.app.chain import build_chain
from shipper.config import parse_config
from shipper.transform.chain import Chain
from shipper.transform.records import NdjsonRecords


def chain_for(environ: dict[str, str] | None = None, **tables: Any) -> Chain:
    settings = parse_config(
        {
            "sources": {"app": {"include": ["/l/*.log"]}},
            "sink": {"type": "directory", "path": "/s"},
            **tables,
        },
        base_dir=Path("/"),
        environ=environ or {},
    )
    return build_chain(
        host="h1",
        environ=environ or {},
        parse=settings.parse,
        enrich=settings.enrich,
        redact=settings.redact,
        sample=settings.sample,
    )


def run(chain: Chain, lines: Sequence[bytes], **kwargs: Any) -> NdjsonRecords:
    ends, end = [], kwargs.get("start", 0)
    for line in lines:
        end += len(line) + 1
        ends.append(end)
    return chain.run(list(lines), ends, read_time=1_700_000_000.0, **kwargs)


def records(out: NdjsonRecords) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in bytes(out.data).splitlines()]


def test_defaults_enrich_and_redact_json_and_plain_text() -> None:
    chain = chain_for({"POD_NAME": "api-7d9", "POD_NAMESPACE": "shop", "NODE_NAME": ""})
    out = run(
        chain,
        [
            b'{"level":"INFO","user":{"password":"p4ss"},"message":"mail ana@example.com"}',
            b"login password=hunter2 from 10.0.0.1",
        ],
    )
    first, second = records(out)
    assert first == {
        "level": "INFO",
        "user": {"password": "[REDACTED]"},
        "message": "mail [REDACTED:email]",
        "host": "h1",
        "kubernetes": {"pod_name": "api-7d9", "pod_namespace": "shop"},
    }
    assert second["message"] == "login password=[REDACTED:secret_pair] from 10.0.0.1"
    assert second["shipper_flags"] == ["wrapped"]
    assert chain.counters["redacted_key"] == 1 and chain.counters["redacted_email"] == 1


def test_redaction_can_be_switched_off() -> None:
    chain = chain_for(redact={"enabled": False}, enrich={"kubernetes": False})
    [record] = records(run(chain, [b'{"password":"p"}']))
    assert record == {"password": "p", "host": "h1"}


def test_file_path_and_offset_of_each_line() -> None:
    chain = chain_for(enrich={"file_path": True, "file_offset": True, "kubernetes": False})
    out = run(chain, [b'{"a":1}', b'{"file_offset":"mine"}'], path="/l/app.log", start=100)
    first, second = records(out)
    assert first["file_path"] == "/l/app.log" and first["file_offset"] == 100
    assert second["file_offset"] == "mine" and second["shipper_file_offset"] == 108
    assert chain.counters["enrich_collision"] == 1


def test_sampled_out_lines_are_entries_of_no_bytes() -> None:
    chain = chain_for(sample={"rules": [{"rate": 0, "match": {"level": "DEBUG"}}]})
    lines = [b'{"level":"DEBUG","n":1}', b'{"level":"ERROR","n":2}', b'{"level":"DEBUG","n":3}']
    out = run(chain, lines)
    assert [r["n"] for r in records(out)] == [2]
    assert out.ends == [24, 48, 72]
    assert out.bounds[0] == 0 and out.bounds[1] == out.bounds[2] == len(out.data)
    assert chain.counters["sampled_out"] == 2


def test_timestamp_field_sets_the_record_time() -> None:
    chain = chain_for(parse={"timestamp_field": "at"})
    out = run(chain, [b'{"at":"2024-01-15T10:30:45Z","timestamp":"2020-01-01T00:00:00Z"}', b"{}"])
    assert [out.time_at(i) for i in range(len(out))] == [1705314645.0, 1_700_000_000.0]


def test_cap_summaries_follow_a_line_share_its_end_and_are_redacted() -> None:
    chain = chain_for(
        sample={"cap": {"max_per_sec": 2, "summary_interval_secs": 1}},
        enrich={"kubernetes": False},
    )
    burst = [b'{"ts":100.0,"message":"login failed for ana@example.com"}'] * 5
    later = [b'{"ts":102.0,"message":"ok"}']
    out = run(chain, burst + later)
    shipped = records(out)
    assert [r["message"] for r in shipped[:2]] == ["login failed for [REDACTED:email]"] * 2
    summary = shipped[3]
    assert summary["shipper_summary"] == "capped" and summary["suppressed"] == 3
    assert summary["cap_key"] == "login failed for [REDACTED:email]"
    assert summary["host"] == "h1"
    assert out.ends[-1] == out.ends[-2]  # shares the end of the line it follows
    assert out.lines[-1] == 0 and sum(out.lines) == 6


def readme_example() -> dict[str, Any]:
    """The worked example in the README, so the documentation stays true."""
    import tomllib

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### A worked example", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    return tomllib.loads(block)


def test_the_readme_worked_example_does_what_it_says() -> None:
    environ = {"SHIPPER_HASH_KEY": "0f" * 16}
    chain = chain_for(environ, **readme_example())
    lines = [
        b'{"level":"INFO","path":"/healthz","trace_id":"t0"}',
        b'{"level":"ERROR","path":"/healthz","trace_id":"t0"}',
        b'{"msg":"login","user_email":"Ana@Example.com","note":"card 4111 1111 1111 1111"}',
        b'{"msg":"by EMP-123456"}',
    ]
    shipped = records(run(chain, lines))
    assert [r.get("level") for r in shipped[:1]] == ["ERROR"]
    login = shipped[1]
    assert login["user_email"].startswith("hmac-sha256:")
    assert login["note"] == "card [REDACTED:credit_card]"
    assert login["service"] == "checkout" and login["env"] == "prod"
    assert shipped[2]["msg"] == "by EMP-[REDACTED:employee_id]"
    sql = [
        b'{"level":"DEBUG","logger":"sqlalchemy.engine","trace_id":"t%d"}' % i for i in range(2000)
    ]
    kept = records(run(chain, sql))
    assert 50 < len(kept) < 150 and all(r["sample_rate"] == 0.05 for r in kept)


FULL_CHAIN = {
    "enrich": {"file_path": True, "file_offset": True},
    "sample": {
        "key_field": "trace.id",
        "rules": [
            {"rate": 0.5, "match": {"message": {"regex": "a+b"}}},
            {"rate": 0.3, "match": {"level": ["DEBUG", "INFO"], "n": 1}},
        ],
        "cap": {"max_per_sec": 3, "summary_interval_secs": 1},
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=8), st.lists(st.binary(max_size=60)))
def test_no_stage_raises_on_arbitrary_lines(values: list[Any], raw: list[bytes]) -> None:
    chain = chain_for(**FULL_CHAIN)
    lines = [orjson.dumps(v).replace(b"\n", b" ") for v in values]
    lines += [line.replace(b"\n", b" ") for line in raw]
    out = run(chain, lines, path="/l/app.log")
    assert sum(out.lines) == len(lines)
    records(out)  # every record encodes to valid NDJSON


def nested(depth: int) -> Any:
    value: Any = {"password": "p4ss", "message": "aab"}
    for level in range(depth):
        value = {"level": "INFO", "n": value} if level % 2 else [value, "x@example.com"]
    return value


@pytest.mark.parametrize(
    "document",
    [
        nested(200),
        {f"k{i}": f"v{i} ana{i}@example.com" if i % 100 == 0 else i for i in range(10_000)},
        {"message": "aab " * 250_000, "trace": {"id": "t"}},
        {"message": "4111 " * 200_000},
        {"message": "eyJ" * 333_333},
        {"note": "password=" * 100_000, "level": "DEBUG", "n": 1},
    ],
    ids=["depth-200", "10k-keys", "1MB-regex-match", "1MB-digit-groups", "1MB-eyJ", "1MB-pairs"],
)
def test_each_stage_is_bounded_on_huge_records(document: Any) -> None:
    chain = chain_for(**FULL_CHAIN)
    line = orjson.dumps(document)
    started = time.perf_counter()
    out = run(chain, [line, line], path="/l/app.log")
    assert time.perf_counter() - started < 10.0
    assert sum(out.lines) == 2
    assert b"p4ss" not in bytes(out.data) and b"ana0@example.com" not in bytes(out.data)


def test_values_too_deep_to_encode_never_stop_the_chain() -> None:
    chain = chain_for(
        {"SHIPPER_HASH_KEY": "k" * 16},
        enrich={"kubernetes": False},
        redact={"key_action": "hash"},
        sample={
            "key_field": "trace",
            "rules": [{"rate": 0.5, "match": {"level": "INFO"}}],
            "cap": {"max_per_sec": 1},
        },
    )
    lines = [b'{"level":"INFO","message":' + b"[" * 300 + b'"m"' + b"]" * 300 + b"}"] * 3 + [
        b'{"level":"INFO","trace":' + b"[" * 300 + b"1" + b"]" * 300 + b"}",
        b'{"password":' + b"[" * 300 + b'"p4ss"' + b"]" * 300 + b',"session":"s3cr3t-x"}',
    ]
    out = run(chain, lines)
    assert sum(out.lines) == len(lines)
    data = bytes(out.data)
    assert b"p4ss" not in data and b"s3cr3t-x" not in data


def test_json_that_orjson_refuses_is_still_redacted_by_key() -> None:
    chain = chain_for(enrich={"kubernetes": False})
    lines = [
        b'{"user":"Jos\xe9","session":"sess-one-9f8e","cvv":123}',  # invalid UTF-8
        b'{"ratio":NaN,"cookie":"sid=Zm9vYmFy1234"}',
        b'{"name":"\\ud83d","session":"sess-two-9f8e"}',  # a lone surrogate escape
        b'{"a":{"session":"sess-three-9f8e","cut":"off mid li',  # cut short: text
        b'{"deep":' + b"[" * 300 + b"1" + b"]" * 300 + b',"session":"sess-four-9f8e"}',
    ]
    out = run(chain, lines)
    data = bytes(out.data)
    for secret in (b"sess-one", b"123", b"Zm9vYmFy1234", b"sess-two", b"sess-three", b"sess-four"):
        assert secret not in data, secret
    first, second, third, fourth, fifth = records(out)
    assert first["shipper_flags"] == ["invalid_utf8", "nonstandard_json"]
    assert second["ratio"] is None and second["shipper_flags"] == ["nonstandard_json"]
    assert third["name"] == "\ufffd" * 3
    assert fourth["shipper_flags"] == ["wrapped"]
    assert fifth["shipper_flags"] == ["unencodable"]


def test_a_long_cap_key_is_summarised_by_its_digest_never_cut() -> None:
    chain = chain_for(
        sample={"cap": {"max_per_sec": 1, "summary_interval_secs": 1}},
        enrich={"kubernetes": False},
    )
    message = "x" * 230 + " postgres://admin:Hunter2Secret@db.internal/x"
    lines = [orjson.dumps({"ts": 100.0, "message": message})] * 3
    lines.append(orjson.dumps({"ts": 200.0, "message": "later"}))
    out = run(chain, lines)
    summary = next(r for r in records(out) if r.get("shipper_summary"))
    assert summary["cap_key"] is None and len(summary["cap_key_sha256"]) == 64
    assert b"Hunter2" not in bytes(out.data)


def test_a_key_block_opened_by_a_sampled_out_line_is_still_followed() -> None:
    chain = chain_for(sample={"rules": [{"rate": 0, "match": {"message": {"regex": "DEBUG"}}}]})
    lines = [
        b"DEBUG loaded signing key -----BEGIN RSA PRIVATE KEY-----",
        b"MIIEpAIBAAKCAQEAsecretbodyline1",
        b"-----END RSA PRIVATE KEY-----",
    ]
    out = run(chain, lines, stream="app.log")
    assert b"secretbody" not in bytes(out.data)


def test_key_blocks_behind_line_prefixes_and_in_docker_json() -> None:
    chain = chain_for()
    cri = [
        b"2026-11-25T10:00:00.1Z stdout F -----BEGIN EC PRIVATE KEY-----",
        b"2026-11-25T10:00:00.2Z stdout F MHcCAQEEIcrisecretbody",
        b"2026-11-25T10:00:00.3Z stdout F -----END EC PRIVATE KEY----- done",
    ]
    docker = [
        b'{"log":"-----BEGIN PRIVATE KEY-----\\n","stream":"stdout"}',
        b'{"log":"MIIEvQIBADANdockersecretbody\\n","stream":"stdout"}',
        b'{"log":"-----END PRIVATE KEY-----\\n","stream":"stdout"}',
    ]
    twice = [
        b"-----BEGIN RSA PRIVATE KEY-----",
        b"MIIfirstsecretbody",
        b"-----END RSA PRIVATE KEY----------BEGIN EC PRIVATE KEY-----",
        b"MHcsecondsecretbody",
        b"-----END EC PRIVATE KEY-----",
    ]
    for lines in (cri, docker, twice):
        out = run(chain, lines, stream="f")
        data = bytes(out.data)
        assert b"secretbody" not in data, data
    cri_out = records(run(chain_for(), cri, stream="g"))
    assert cri_out[1]["message"] == "2026-11-25T10:00:00.2Z stdout F [REDACTED:private_key]"


def test_the_pre_check_covers_every_card_the_detector_finds() -> None:
    chain = chain_for()
    for text in (
        "order-2024-4111111111111111",
        "ref 1-4111111111111111",
        "601 111 111 111 1117",
        "378282-246310-005",
        "4222 2222 2222 2",
    ):
        [record] = records(run(chain, [text.encode()]))
        assert "[REDACTED:credit_card]" in record["message"], text


def test_names_enrichment_adds_are_subject_to_key_rules() -> None:
    chain = chain_for(
        enrich={"file_path": True, "kubernetes": False}, redact={"keys": {"path": "mask"}}
    )
    [record] = records(run(chain, [b'{"a":1}'], path="/l/app.log"))
    assert record["file_path"] == "[REDACTED]"


def test_text_levels_in_any_case_and_java_levels_are_never_sampled_out() -> None:
    chain = chain_for(sample={"rules": [{"rate": 0, "match": {"message": {"regex": "x"}}}]})
    lines = [
        b"2026/11/25 10:00:00 [error] 12#0: x upstream timed out",
        b'{"level":"SEVERE","message":"x"}',
        b"2026/11/25 10:00:00 [info] x",
    ]
    kept = records(run(chain, lines))
    assert len(kept) == 2
