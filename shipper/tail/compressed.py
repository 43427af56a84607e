"""Rotated files compressed before we finished them (logrotate ``compress``).

Offsets stay those of the uncompressed file, so a rotated file found again as
``app.log.1.gz`` is finished from the decompressed stream at the checkpoint's
offset, under its own fingerprint: its byte ranges (and object keys) go on
where they stopped. Compressed files are never tailed as text; they are read
through :mod:`shipper.tail.decompress`, which refuses compression bombs.
"""

from __future__ import annotations

from shipper.tail.decompress import DecompressedStream, Refusal, is_compressed

__all__ = ["CompressedFileTailer", "RefusedFiles", "find_compressed", "match_stream"]

import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from shipper.files.durable import regular_files
from shipper.files.fingerprint import Fingerprint
from shipper.files.markers import Marker, check_markers
from shipper.tail.checkpoints import Checkpoint
from shipper.tail.tailer import FileTailer, LineChunk

log = logging.getLogger(__name__)


#: Refused files remembered, so each is reported once (the oldest are forgotten).
_REFUSALS_REMEMBERED = 4096


class RefusedFiles:
    """Reports each refused compressed file once: one ERROR line and one count.

    One is shared by the reader and the disk guard, so a file both refuse is
    reported once; a file changed since (another size or mtime) is reported again.
    """

    def __init__(self, counters: Counter[str]) -> None:
        self._counters = counters
        self._reported: OrderedDict[tuple[int, int, int, int], None] = OrderedDict()

    def report(self, path: str, refusal: Refusal, **context: object) -> None:
        if refusal.file in self._reported:
            return
        self._reported[refusal.file] = None
        if len(self._reported) > _REFUSALS_REMEMBERED:
            self._reported.popitem(last=False)
        self._counters["compressed_refused"] += 1
        log.error(
            "compressed file refused: it expands too far to be a log (a compression"
            " bomb?); left as it is, not read further and never deleted",
            extra={"path": path, **refusal.fields(), **context},
        )


class CompressedFileTailer(FileTailer):
    """A :class:`FileTailer` over a :class:`DecompressedStream`; always a rotated file."""

    def __init__(
        self,
        *,
        stream: DecompressedStream,
        source: str,
        path: str,
        fingerprint: Fingerprint,
        offset: int,
        chunk_bytes: int,
        max_line_bytes: int,
    ) -> None:
        super().__init__(
            source=source,
            path=path,
            fd=stream.fileno(),
            fingerprint=fingerprint,
            offset=offset,
            chunk_bytes=chunk_bytes,
            max_line_bytes=max_line_bytes,
        )
        self.stream = stream
        self.finish_at_eof = True

    def _pread(self, length: int, offset: int) -> bytes:
        return self.stream.pread(length, offset)

    def replaced_in_place(self) -> bool:
        return False  # a compressed rotation is final

    def marker_at(self, end: int) -> Marker | None:
        return None  # reading backwards would decompress it all again

    def take_partial(self) -> LineChunk | None:
        if self.stream.refused is not None:
            # Not the file's last line: the refusal cut it (and it is most likely the
            # bomb's own bytes). Nothing past the last whole line is shipped.
            return None
        return super().take_partial()

    def close(self) -> None:
        if self._fd is not None:
            self.stream.close()
            self._fd = None


def find_compressed(
    directories: Iterable[Path],
    wanted: Sequence[Checkpoint],
    refused: list[tuple[str, Refusal]] | None = None,
) -> list[tuple[DecompressedStream, Checkpoint]]:
    """Open the compressed files in ``directories`` that hold a wanted file.

    A compressed file holds a known file if it starts with that file's first bytes
    and has the same bytes at its markers (where the stream is long enough to
    check). Each wanted file is matched at most once; unmatched streams are closed.
    Files refused while being checked (see :data:`MAX_EXPANSION_RATIO`) match
    nothing and are added to ``refused``.
    """
    if not wanted:
        return []
    longest = max(c.fingerprint.head_len for c in wanted)
    left = list(wanted)
    found: list[tuple[DecompressedStream, Checkpoint]] = []
    for path, _ in regular_files(directories):
        if not left:
            break
        if not is_compressed(path):
            continue
        try:
            stream = DecompressedStream(path)
        except OSError:
            continue
        match = match_stream(stream, left, longest)
        if match is None:
            if stream.refused is not None and refused is not None:
                refused.append((stream.path, stream.refused))
            stream.close()
            continue
        left.remove(match)
        found.append((stream, match))
    return found


def match_stream(
    stream: DecompressedStream, wanted: Sequence[Checkpoint], longest: int
) -> Checkpoint | None:
    """The wanted file ``stream`` holds: same first bytes, same bytes at the markers."""
    head = stream.pread(longest, 0)
    for checkpoint in wanted:
        if not checkpoint.fingerprint.matches_head(head):
            continue
        # With markers, they must all be there and match; without (a checkpoint from
        # before markers), the first line must do. Either way the stream must reach
        # the offset: a shorter file that starts the same is another file.
        verdict = check_markers(checkpoint.markers, stream.pread)
        if verdict is False or (checkpoint.markers and verdict is None):
            continue
        offset = checkpoint.offset
        if offset > 0 and len(stream.pread(1, offset - 1)) != 1:
            continue
        return checkpoint
    return None
