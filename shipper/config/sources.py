"""The ``[sources.NAME]`` tables: which files, how they are read, multiline joining."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import cast, get_args

from shipper.config.model import MultilineSettings, ReadFrom, SourceSettings, allowed_keys
from shipper.config.reader import Declared, Table, resolve_path

_SOURCE_KEYS = allowed_keys(SourceSettings, "name")
_MULTILINE_KEYS = allowed_keys(MultilineSettings)
_MULTILINE_PRESETS = ("python_traceback", "json")
_SOURCE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_sources(root: Table, base_dir: Path) -> dict[str, SourceSettings]:
    table = root.table("sources", required=True)
    if table is None:
        return {}
    if not table.data:
        root.problem("sources", "must define at least one source, e.g. [sources.app]")
    sources: dict[str, SourceSettings] = {}
    for name in table.data:
        if not _SOURCE_NAME_RE.fullmatch(name):
            table.problem(
                name,
                f"source name must match ^{_SOURCE_NAME_RE.pattern}$ (it is used in object keys)",
            )
        source = table.table(name)
        if source is not None:
            sources[name] = _parse_source(name, source, base_dir)
    return sources


def _parse_source(name: str, table: Table, base_dir: Path) -> SourceSettings:
    table.check_keys(_SOURCE_KEYS)
    include = [str(resolve_path(base_dir, p)) for p in table.string_list("include", required=True)]
    exclude = [_exclude_pattern(base_dir, p) for p in table.string_list("exclude")]
    declared = Declared(table, SourceSettings)
    read_from = declared.choice("read_from", get_args(ReadFrom))
    return SourceSettings(
        name=name,
        include=tuple(include),
        exclude=tuple(exclude),
        read_from=cast(ReadFrom, read_from),
        fingerprint_bytes=declared.size("fingerprint_bytes"),
        rotate_wait_secs=declared.seconds("rotate_wait_secs"),
        read_chunk_bytes=declared.size("read_chunk_bytes"),
        max_line_bytes=declared.size("max_line_bytes"),
        multiline=_parse_multiline(table.table("multiline")),
        stale_after_secs=declared.seconds("stale_after_secs"),
        symlink_targets=tuple(_absolute_paths(table, "symlink_targets")),
    )


def _absolute_paths(table: Table, name: str) -> list[str]:
    """A list of absolute paths, normalised (``/var/log/pods/`` is ``/var/log/pods``).

    Not resolved against the config file: a relative target would mean another
    directory for each working directory the daemon could start in.
    """
    items = table.string_list(name)  # reports what is not a string
    raw = table.data.get(name)
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(item, str) and item and not os.path.isabs(item):
            table.problem(f"{name}[{index}]", f'must be an absolute path, got "{item}"')
    return [os.path.normpath(item) for item in items if os.path.isabs(item)]


def _parse_multiline(table: Table | None) -> MultilineSettings:
    if table is None:
        return MultilineSettings()
    table.check_keys(_MULTILINE_KEYS)
    preset = table.choice("preset", _MULTILINE_PRESETS, None) if "preset" in table.data else None
    pattern = table.optional_string("start_pattern")
    if preset is not None and pattern is not None:
        table.problem("start_pattern", "set either preset or start_pattern, not both")
    if pattern is not None:
        try:
            re.compile(pattern.encode())
        except re.error as exc:
            table.problem("start_pattern", f"invalid regular expression: {exc}")
    return MultilineSettings(
        preset=preset,
        start_pattern=pattern,
        timeout_secs=Declared(table, MultilineSettings).seconds("timeout_secs"),
        max_lines=Declared(table, MultilineSettings).integer("max_lines"),
    )


def _exclude_pattern(base_dir: Path, pattern: str) -> str:
    """Slash-free excludes such as "*.gz" match basenames anywhere, so they stay relative."""
    return pattern if "/" not in pattern else str(resolve_path(base_dir, pattern))
