"""Joins the lines of one record that spans several (a Python traceback, pretty JSON).

A rule says which lines start a record; the others continue the one before.
A record is emitted when the next one starts, when it reaches ``max_lines``, or
when no line has come for ``timeout_secs`` (the last record of a burst). Its
end offset is that of its last line, so a checkpoint never splits a record.
"""

from __future__ import annotations

__all__ = ["PRESETS", "LineJoiner", "StartRule", "start_rule"]

import re
import time
from collections.abc import Callable

from shipper.tail.tailer import LineChunk

#: ``(line, previous line) -> whether line starts a new record``.
StartRule = Callable[[bytes, bytes | None], bool]

_PYTHON_CONTINUATION = re.compile(
    rb"^(\s|$"
    rb"|Traceback \(most recent call last\):"
    rb"|During handling of the above exception"
    rb"|The above exception was the direct cause"
    rb"|[\w.]+(Error|Exception|Warning|Exit|Interrupt|Iteration)(:|$))"
)


def _python_traceback(line: bytes, previous: bytes | None) -> bool:
    """Text logs with tracebacks: indented, blank and exception lines continue a record."""
    return not _PYTHON_CONTINUATION.match(line)


def _json_lines(line: bytes, previous: bytes | None) -> bool:
    """JSON logs: every JSON line is a record; stray text lines between them form one.

    The users' guide's JSON formatter already puts the traceback inside its line;
    this only gathers what other code printed raw into the same file.
    """
    return line.startswith(b"{") or previous is None or previous.startswith(b"{")


PRESETS: dict[str, StartRule] = {"python_traceback": _python_traceback, "json": _json_lines}


def start_rule(*, preset: str | None, start_pattern: str | None) -> StartRule | None:
    """The configured rule, or None when multiline is off. Config validation ran before."""
    if preset is not None:
        return PRESETS[preset]
    if start_pattern is not None:
        compiled = re.compile(start_pattern.encode())
        return lambda line, previous: compiled.search(line) is not None
    return None


class LineJoiner:
    def __init__(
        self, rule: StartRule, *, timeout_secs: float, max_lines: int, max_bytes: int
    ) -> None:
        self.rule = rule
        self.timeout_secs = timeout_secs
        self.max_lines = max_lines
        #: A record is also emitted at this size, so memory stays bounded per file.
        self.max_bytes = max_bytes
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._end = 0
        self._flags: tuple[str, ...] = ()
        self._last_line_at = 0.0
        self._previous: bytes | None = None

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def deadline(self) -> float | None:
        """Monotonic time the held record is emitted by the timeout, if one is held."""
        return self._last_line_at + self.timeout_secs if self._held else None

    def feed(self, chunk: LineChunk) -> LineChunk:
        """The complete records among ``chunk``'s lines; the last one is held back."""
        out = LineChunk(read_time=chunk.read_time)
        for index, (line, end) in enumerate(zip(chunk.lines, chunk.ends, strict=True)):
            starts = self.rule(line, self._previous)
            full = len(self._held) >= self.max_lines or self._held_bytes >= self.max_bytes
            if self._held and (starts or full):
                self._emit(out)
            self._held.append(line)
            self._held_bytes += len(line) + 1
            self._end = end
            self._flags = (*self._flags, *chunk.flags.get(index, ()))
            self._previous = line
        if chunk.lines:
            self._last_line_at = time.monotonic()
        return out

    def flush(self, read_time: float) -> LineChunk | None:
        """Emit the held record now (timeout, finished file)."""
        if not self._held:
            return None
        out = LineChunk(read_time=read_time)
        self._emit(out)
        return out

    def _emit(self, out: LineChunk) -> None:
        flags = tuple(dict.fromkeys(self._flags))  # each flag once, in order
        out.add(b"\n".join(self._held), self._end, *flags)
        self._held = []
        self._held_bytes = 0
        self._flags = ()
