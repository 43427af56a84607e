import time

import pytest

from shipper.tail.multiline import LineJoiner, start_rule
from shipper.tail.tailer import LineChunk

TRACEBACK_LOG = [
    b"2026-11-25 10:00:00,001 - app - INFO - started",
    b"2026-11-25 10:00:01,002 - app - ERROR - failed",
    b"Traceback (most recent call last):",
    b'  File "app.py", line 3, in <module>',
    b"    main()",
    b"",
    b"During handling of the above exception, another exception occurred:",
    b"ValueError: bad value",
    b"2026-11-25 10:00:02,003 - app - INFO - next",
]


def chunk(lines: list[bytes], start: int = 0) -> LineChunk:
    out = LineChunk(read_time=1.0)
    end = start
    for line in lines:
        end += len(line) + 1
        out.add(line, end)
    return out


def joiner(preset: str | None = None, pattern: str | None = None, **kw: float) -> LineJoiner:
    rule = start_rule(preset=preset, start_pattern=pattern)
    assert rule is not None
    return LineJoiner(
        rule,
        timeout_secs=kw.get("timeout", 1.0),
        max_lines=int(kw.get("max_lines", 100)),
        max_bytes=int(kw.get("max_bytes", 1 << 20)),
    )


def test_python_traceback_preset_joins_a_traceback_into_its_record() -> None:
    j = joiner("python_traceback")
    out = j.feed(chunk(TRACEBACK_LOG))
    assert out.lines == [TRACEBACK_LOG[0], b"\n".join(TRACEBACK_LOG[1:8])]
    assert out.ends == [len(TRACEBACK_LOG[0]) + 1, sum(len(x) + 1 for x in TRACEBACK_LOG[:8])]
    assert j.holding  # the last record waits for the next start or the timeout
    rest = j.flush(2.0)
    assert rest is not None and rest.lines == [TRACEBACK_LOG[8]]
    assert rest.ends == [sum(len(x) + 1 for x in TRACEBACK_LOG)]
    assert not j.holding and j.flush(3.0) is None


def test_records_are_joined_across_chunk_boundaries() -> None:
    j = joiner("python_traceback")
    first = j.feed(chunk(TRACEBACK_LOG[:4]))
    second = j.feed(chunk(TRACEBACK_LOG[4:], start=first.ends[-1] if first.ends else 0))
    assert first.lines == [TRACEBACK_LOG[0]]
    assert second.lines == [b"\n".join(TRACEBACK_LOG[1:8])]


def test_json_preset_keeps_json_lines_whole_and_gathers_stray_text() -> None:
    j = joiner("json")
    lines = [b'{"a": 1}', b"Traceback (most recent call last):", b"  x", b'{"b": 2}', b'{"c": 3}']
    out = j.feed(chunk(lines))
    assert out.lines == [b'{"a": 1}', b"Traceback (most recent call last):\n  x", b'{"b": 2}']


def test_start_pattern_and_max_lines() -> None:
    j = joiner(pattern=r"^\{", max_lines=3)
    out = j.feed(chunk([b"{", b' "a": 1', b"}", b"{", b"1", b"2", b"3", b"4"]))
    assert out.lines == [b'{\n "a": 1\n}', b"{\n1\n2"]
    assert j.deadline() is not None


def test_flags_of_joined_lines_are_kept() -> None:
    j = joiner(pattern=r"^S")
    c = chunk([b"S1", b"more", b"S2"])
    c.flags[1] = ("truncated",)
    out = j.feed(c)
    assert out.flags == {0: ("truncated",)}


def test_deadline_follows_the_last_line() -> None:
    j = joiner(pattern=r"^S", timeout=0.5)
    assert j.deadline() is None
    before = time.monotonic()
    j.feed(chunk([b"S1"]))
    deadline = j.deadline()
    assert deadline is not None and before + 0.5 <= deadline <= time.monotonic() + 0.5


@pytest.mark.parametrize("preset", [None])
def test_off_when_nothing_is_configured(preset: str | None) -> None:
    assert start_rule(preset=preset, start_pattern=None) is None


def test_a_record_is_cut_at_max_bytes() -> None:
    j = joiner(pattern=r"^S", max_bytes=10)
    out = j.feed(chunk([b"S", b"aaaa", b"bbbb", b"cccc", b"dddd"]))
    assert out.lines == [b"S\naaaa\nbbbb"]  # 11 bytes held: full before "cccc"
