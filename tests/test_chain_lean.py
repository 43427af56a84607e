"""The chain's short way for clean JSON lines gives what the long way gives, byte for byte."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shipper.transform.chain import Chain
from tests.test_chain import chain_for

#: Chains the property runs: the defaults, and each setting the short way reads.
CHAINS: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({}, {}),
    ({}, {"enrich": {"file_path": True, "file_offset": True, "fields": {"service": "api"}}}),
    (
        {"POD_NAME": "p-1", "POD_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
        {"enrich": {"kubernetes": True, "fields": {"team": "pay", "tier": 1}}},
    ),
    ({}, {"redact": {"enabled": False}}),
    ({}, {"enrich": {"fields": {"time": 1_600_000_000}}}),
    ({}, {"parse": {"timestamp_field": "ts"}, "enrich": {"fields": {"ts": 5}}}),
    ({}, {"redact": {"custom": [{"name": "order", "pattern": "ord-[0-9]+"}]}}),
    ({}, {"sample": {"rules": [{"rate": 0.5, "match": {"level": "INFO"}}]}}),
]

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
_SECRETISH = st.sampled_from(
    [
        "card 4111 1111 1111 1111",
        "mail ana@example.com",
        "ord-12345",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "-----END RSA PRIVATE KEY-----",
        "QUJD",
        "2026-11-25 09:00:00 stdout F MIIBVQ+/",
        "password=hunter2",
        "plain words",
    ]
)
_SCALAR = st.none() | st.booleans() | st.integers(-(2**60), 2**60) | _TEXT | _SECRETISH
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    [
        "message",
        "level",
        "host",
        "service",
        "ts",
        "time",
        "timestamp",
        "password",
        "file_path",
        "log",
        "seq",
        "kubernetes",
    ]
)
_TIMES = st.sampled_from(
    ["2026-11-25T09:00:00.123456Z", "2026-11-25 09:00:00", "yesterday", 1_700_000_000, 1.7e12]
)


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["record", "record", "record", "text", "raw", "array", "docker"]))
    if kind == "docker":  # Docker's json-file lines: a private key block spans lines
        newline = draw(st.sampled_from(["", "\n"]))  # an escape makes a line searched
        return orjson.dumps({"log": draw(_SECRETISH) + newline, "stream": "stdout"})
    if kind == "text":
        return draw(_SECRETISH | _TEXT).encode("utf-8", "surrogatepass").replace(b"\n", b" ")
    if kind == "raw":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    if kind == "array":
        return orjson.dumps(draw(st.lists(_SCALAR, max_size=3)))
    record = draw(st.dictionaries(_KEYS | _TEXT, _VALUE, max_size=5))
    if draw(st.booleans()):
        record["timestamp"] = draw(_TIMES)
    line = orjson.dumps(record)
    if draw(st.booleans()):
        # json.dumps spacing, as the users' formatter writes it, and a CRLF now and then.
        line = line.replace(b'":', b'": ').replace(b',"', b', "')
    if draw(st.integers(0, 9)) == 0:
        line += b"\r"
    return line


def run(chain: Chain, chunks: Sequence[Sequence[bytes]], lean: bool, flags: bool) -> list[Any]:
    results: list[Any] = []
    end = 0
    for chunk in chunks:
        ends = []
        start = end
        for line in chunk:
            end += len(line) + 1
            ends.append(end)
        line_flags = {0: ("truncated",)} if flags and chunk else None
        out = chain.run(
            list(chunk),
            ends,
            read_time=1_700_000_000.0,
            line_flags=line_flags,
            stream="f1",
            path="/l/app.log",
            start=start,
            lean=lean,
        )
        times = [out.time_at(i) for i in range(len(out))]
        results.append((bytes(out.data), out.bounds, out.ends, times, out.lines, out.plain))
    return results


def docker(text: str) -> bytes:
    return orjson.dumps({"log": text, "stream": "stdout"})


#: A private key written to a container's output: one Docker line per key line. The
#: body lines hold nothing the pre-check looks for, but are inside the block.
KEY_BLOCK = [
    docker("-----BEGIN RSA PRIVATE KEY-----"),
    docker("QUJD"),
    docker("MIIBVQ+/"),
    docker("-----END RSA PRIVATE KEY-----"),
    docker("done"),
]


@settings(max_examples=300, deadline=None)
@example(0, [KEY_BLOCK], False)
@example(0, [KEY_BLOCK[:2], KEY_BLOCK[2:]], False)  # a block open across chunks
@given(
    st.sampled_from(range(len(CHAINS))),
    st.lists(st.lists(lines(), max_size=8), min_size=1, max_size=4),
    st.booleans(),
)
def test_the_short_way_gives_the_long_ways_bytes(
    which: int, chunks: list[list[bytes]], flags: bool
) -> None:
    environ, tables = CHAINS[which]
    environ = {"SHIPPER_HASH_KEY": "k" * 16, **environ}
    short, long = chain_for(environ, **tables), chain_for(environ, **tables)
    assert run(short, chunks, lean=True, flags=flags) == run(long, chunks, lean=False, flags=flags)
    assert short.counters == long.counters


def test_clean_seed_lines_take_the_short_way() -> None:
    chain = chain_for()
    line = orjson.dumps({"timestamp": "2026-11-25T09:00:00Z", "level": "INFO", "message": "ok"})
    calls = 0
    parse_line_long = chain._long_way

    def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        parse_line_long(*args, **kwargs)

    chain._long_way = counted  # type: ignore[method-assign]
    chain.run([line, b"not json", line], [10, 20, 30], read_time=0.0, path="/l/a.log")
    assert calls == 1  # the text line alone
