"""Object keys: a pure function of the batch (source, file fingerprint, byte range, time).

Retrying or replaying a batch after a crash writes the same key, so the
store's ``If-None-Match: *`` turns a repeat into a no-op instead of a duplicate.
That holds only if the key is *deterministic* (nothing but the batch and fixed
settings goes in) and *unique per batch* (the host, the fingerprint and both
ends of the range are in it); :func:`compile_template` refuses templates that
are not.

The default is Hive-partitioned: ``dt=``/``hour=`` come from the batch's first
record time (UTC), so DuckDB, Athena and Trino can prune partitions.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "KeyTemplate",
    "KeyTemplateError",
    "compile_template",
    "gap_key",
    "is_gap_key",
    "object_suffix",
]

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

DEFAULT_KEY_TEMPLATE = "source={source}/host={host}/dt=%Y-%m-%d/hour=%H/{fingerprint}-{start}-{end}"

#: The fields every batch fills in; static ones come from ``sink.key_fields``.
BATCH_FIELDS = frozenset({"source", "host", "fingerprint", "start", "end"})
#: Fields a key needs to name one batch and no other. The fingerprint (device,
#: inode, first line) is only unique on one host: cloned machines or pods can have
#: the same, and a second host's batch would meet the first's object (412) and be
#: taken as delivered.
REQUIRED_FIELDS = ("host", "fingerprint", "start", "end")
#: strftime directives that depend on the time alone (not on the locale or the
#: platform), so a key is the same on every machine and after every restart.
TIME_DIRECTIVES = frozenset("YmdHMSjyGVuUW%")
#: Partitions remembered (a few seconds' worth of sources): see ``KeyTemplate``.
_PARTITIONS_KEPT = 4096
#: S3 caps keys at 1,024 bytes; the rendered fields and the suffix take up to this much.
MAX_TEMPLATE_BYTES = 768
_STATIC_VALUE_RE = re.compile(r"[A-Za-z0-9._=-]+")


class KeyTemplateError(ValueError):
    """A ``key_template`` that would not give one stable key per batch."""


def object_suffix(codec: str) -> str:
    return ".ndjson.zst" if codec == "zstd" else ".ndjson.gz"


#: Gap records (lines deleted unshipped) sit beside the batches, named like the batch
#: of the same range would be, with this before the suffix.
_GAP_MARK = ".gap"


def gap_key(batch_key: str, codec: str) -> str:
    suffix = object_suffix(codec)
    return batch_key.removesuffix(suffix) + _GAP_MARK + suffix


def is_gap_key(key: str) -> bool:
    return any(key.endswith(_GAP_MARK + object_suffix(codec)) for codec in ("zstd", "gzip"))


@dataclass(frozen=True, slots=True)
class KeyTemplate:
    """A checked template: literal parts (with strftime directives) and field names."""

    #: ``(literal, field or None)`` in order, as :class:`string.Formatter` parses them.
    parts: tuple[tuple[str, str | None], ...]
    prefix: str
    static: Mapping[str, str]
    host: str
    suffix: str
    #: Partitions by (source, second): a template's directives go down to seconds
    #: (``TIME_DIRECTIVES``), and sealing many small files asks for thousands a second.
    _partitions: dict[tuple[str, int], str] = field(default_factory=dict, compare=False, repr=False)

    def render(
        self, *, source: str, fingerprint_id: str, start: int, end: int, first_time: float
    ) -> str:
        """``[prefix/]<template>`` plus the codec's suffix. Offsets are zero-padded to 20
        digits, so a listing sorts one file's objects by position."""
        if end <= start:
            raise ValueError(f"empty byte range [{start}, {end})")
        when = datetime.fromtimestamp(first_time, tz=timezone.utc)
        values = {
            **self.static,
            "source": source,
            "host": self.host,
            "fingerprint": fingerprint_id,
            "start": f"{start:020d}",
            "end": f"{end:020d}",
        }
        body = self._fill(when, values) + self.suffix
        return f"{self.prefix}/{body}" if self.prefix else body

    def partition(self, *, source: str, first_time: float) -> str:
        """The key with the file's range left out: its source, host, static fields and
        time. Batches of one partition may share an object; others may not."""
        second = math.floor(first_time)
        found = self._partitions.get((source, second))
        if found is None:
            if len(self._partitions) >= _PARTITIONS_KEPT:
                self._partitions.clear()
            when = datetime.fromtimestamp(second, tz=timezone.utc)
            values = {**self.static, "source": source, "host": self.host}
            values.update(fingerprint="", start="", end="")
            found = self._partitions[(source, second)] = self._fill(when, values)
        return found

    def _fill(self, when: datetime, values: Mapping[str, str]) -> str:
        # strftime runs on the template's own text only: a '%' in a source name or
        # host stays as it is.
        out = [when.strftime(literal) + ("" if name is None else values[name])
               for literal, name in self.parts]  # fmt: skip
        return "".join(out)


def compile_template(
    template: str,
    *,
    prefix: str = "",
    static: Mapping[str, str] | None = None,
    host: str = "",
    codec: str = "zstd",
) -> KeyTemplate:
    """Check ``template`` and bind its fixed settings; raises :class:`KeyTemplateError`."""
    static = dict(static or {})
    for name, value in static.items():
        if name in BATCH_FIELDS:
            raise KeyTemplateError(f'static field "{name}" would hide the batch field of that name')
        if not _STATIC_VALUE_RE.fullmatch(value):
            raise KeyTemplateError(
                f'static field "{name}" = "{value}": use letters, digits, ".", "_", "=" and "-"'
            )
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise KeyTemplateError(f"unbalanced braces: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, field_name, spec, conversion in parsed:
        _check_directives(literal)
        if field_name is not None and (spec or conversion):
            raise KeyTemplateError(
                f'"{{{field_name}}}": format specs and conversions are not allowed'
            )
        if field_name is not None and field_name not in BATCH_FIELDS | static.keys():
            known = ", ".join(f"{{{f}}}" for f in sorted(BATCH_FIELDS | set(static)))
            raise KeyTemplateError(f'unknown field "{{{field_name}}}"; known fields: {known}')
        parts.append((literal, field_name))
    names = {name for _, name in parts if name}
    missing = [f"{{{f}}}" for f in REQUIRED_FIELDS if f not in names]
    if missing:
        raise KeyTemplateError(
            f"must contain {', '.join(missing)}: without them two batches could get the same key"
        )
    if template.startswith("/") or "//" in template or ".." in template.split("/"):
        raise KeyTemplateError('must not start with "/" or contain "//" or ".." segments')
    if len(template.encode()) > MAX_TEMPLATE_BYTES:
        raise KeyTemplateError(f"longer than {MAX_TEMPLATE_BYTES} bytes")
    return KeyTemplate(tuple(parts), prefix, static, host, object_suffix(codec))


def _check_directives(literal: str) -> None:
    i = 0
    while (i := literal.find("%", i)) >= 0:
        directive = literal[i + 1 : i + 2]
        if directive not in TIME_DIRECTIVES or not directive:
            raise KeyTemplateError(
                f'"%{directive}" depends on more than the time (or is not a directive); '
                f"allowed: {' '.join('%' + d for d in sorted(TIME_DIRECTIVES))}"
            )
        i += 2
