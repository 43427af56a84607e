"""What deleting a file unshipped loses: the byte range and line count a gap record names."""

from __future__ import annotations

__all__ = ["READ_BYTES", "Loss", "count_lines", "lines_between", "sealed_in_stream"]

import os
from collections.abc import Sequence
from dataclasses import dataclass

from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Pread, check_markers
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.decompress import DecompressedStream

#: Bytes read at a time when measuring or counting.
READ_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Loss:
    """The exact lines a deletion of an unshipped file loses."""

    fingerprint: Fingerprint | None
    start: int
    end: int
    lines: int


def lines_between(fd: int, fingerprint: Fingerprint | None, start: int, end: int) -> Loss:
    """The loss of ``[start, end)`` of the plain file open as ``fd``."""
    lines = count_lines(lambda n, at: os.pread(fd, n, at), start, end)
    return Loss(fingerprint, start, end, lines)


def sealed_in_stream(
    stream: DecompressedStream, known: Sequence[Checkpoint], length: int
) -> tuple[Fingerprint | None, int]:
    longest = max((c.fingerprint.head_len for c in known), default=0)
    head = stream.pread(longest, 0)
    best: tuple[Fingerprint | None, int] = (None, 0)
    for checkpoint in known:
        if not checkpoint.fingerprint.matches_head(head) or checkpoint.offset > length:
            continue
        # The markers prove the stream holds the bytes that were sealed; without any
        # the claim is unproven and the whole content is reported lost.
        if check_markers(checkpoint.markers, stream.pread) is not True:
            continue
        if best[0] is None or checkpoint.offset > best[1]:
            best = (checkpoint.fingerprint, checkpoint.offset)
    return best


def count_lines(pread: Pread, start: int, end: int) -> int:
    """Lines in ``[start, end)``, a last line without its newline counted too."""
    lines = 0
    position = start
    last = b""
    while position < end:
        data = pread(min(READ_BYTES, end - position), position)
        if not data:
            break
        lines += data.count(b"\n")
        last = data[-1:]
        position += len(data)
    return lines + (1 if last and last != b"\n" else 0)
