"""Turns the TOML config file into frozen, validated settings.

Every problem is collected before failing, so an operator fixes a broken file in one pass
instead of one error per restart.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "BatchSettings",
    "DiskSettings",
    "EnrichSettings",
    "HealthSettings",
    "MultilineSettings",
    "ParseSettings",
    "ReadFrom",
    "RedactSettings",
    "RetentionSettings",
    "SampleSettings",
    "Settings",
    "SinkSettings",
    "SinkType",
    "SourceSettings",
    "SpoolSettings",
    "find_config_path",
    "load_config",
    "parse_config",
]

import dataclasses
import datetime
import difflib
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

from shipper.batch.objectkey import DEFAULT_KEY_TEMPLATE, KeyTemplateError, compile_template
from shipper.errors import ConfigError, ConfigProblem
from shipper.redact_output import OutputScrubber
from shipper.transform.redact.detectors import (
    DETECTOR_NAMES,
    Detector,
    LinearRegexError,
    compile_linear,
)
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS, RedactAction, normalise_key
from shipper.transform.sample import LEVELS, CapLimit, FieldCondition, SampleRule
from shipper.units import GiB, KiB, MiB, format_size, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("/etc/shipper/config.toml")
CONFIG_ENV_VAR = "SHIPPER_CONFIG"

ReadFrom = Literal["beginning", "end"]
SinkType = Literal["s3", "directory"]
Codec = Literal["zstd", "gzip"]
#: Each codec's compression level when the config sets none.
DEFAULT_COMPRESSION_LEVEL: Mapping[str, int] = MappingProxyType({"zstd": 3, "gzip": 6})
ChecksumAlgorithm = Literal["CRC32", "SHA256"]
ServerSideEncryption = Literal["AES256", "aws:kms"]
ObjectLockMode = Literal["GOVERNANCE", "COMPLIANCE"]
FieldValue = str | int | float | bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MultilineSettings:
    """Joining lines into records; off unless ``preset`` or ``start_pattern`` is set."""

    #: "python_traceback" (text logs with tracebacks) or "json" (JSON lines, with stray
    #: text lines between them gathered into one record).
    preset: str | None = None
    #: A regex (searched in each line): a matching line starts a new record.
    start_pattern: str | None = None
    #: Emit a held record when no line has followed it for this long.
    timeout_secs: float = 1.0
    max_lines: int = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    name: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    read_from: ReadFrom = "beginning"
    fingerprint_bytes: int = 256
    rotate_wait_secs: float = 5.0
    read_chunk_bytes: int = MiB
    #: Longer lines are cut to this length and flagged "truncated"; the rest is skipped.
    max_line_bytes: int = MiB
    multiline: MultilineSettings = field(default_factory=MultilineSettings)
    #: A live file not written for this long is flagged stale in /status and logged.
    stale_after_secs: float = 3600.0
    #: Directories (absolute) a symlink the globs match may lead into, besides the
    #: include globs' own base directories (Kubernetes: ``/var/log/containers/*.log``
    #: links into ``/var/log/pods``). A symlink leading anywhere else is not shipped.
    symlink_targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseSettings:
    #: Where a record's own time is read, first match wins; a record without one gets
    #: the time it was read.
    timestamp_fields: tuple[str, ...] = ("timestamp", "time", "ts", "@timestamp")


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrichSettings:
    fields: Mapping[str, FieldValue] = field(default_factory=lambda: MappingProxyType({}))
    host: bool = True
    collision_prefix: str = "shipper_"
    #: A ``kubernetes`` object from the downward-API variables that are set.
    kubernetes: bool = True
    #: ``file_path`` and ``file_offset``: the file and byte offset a record's line came from.
    file_path: bool = False
    file_offset: bool = False


RedactChoice = Literal["mask", "hash", "remove", "partial", "off"]
_REDACT_ACTIONS: tuple[str, ...] = get_args(RedactChoice)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedactSettings:
    enabled: bool = True
    #: Action for the built-in secret keys.
    key_action: RedactAction = "mask"
    #: Keys and their actions, built-in ones included; "off" lifts a built-in key.
    keys: Mapping[str, RedactAction] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(DEFAULT_SECRET_KEYS, "mask"))
    )
    #: Enabled built-in detectors and their actions.
    detectors: Mapping[str, RedactAction] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(DETECTOR_NAMES, "mask"))
    )
    #: Detectors from the config: (detector, action).
    custom: tuple[tuple[Detector, RedactAction], ...] = ()
    #: The environment variable holding the HMAC key of the ``hash`` action.
    hash_key_env: str = "SHIPPER_HASH_KEY"
    hash_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleSettings:
    rules: tuple[SampleRule, ...] = ()
    #: Hashed for the keep decision (a trace or user id); without it, the line is.
    key_field: tuple[str, ...] | None = None
    keep_level: int = 30
    level_fields: tuple[tuple[str, ...], ...] = (("level",), ("levelname",), ("severity",))
    rate_field: str = "sample_rate"
    cap: CapLimit | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSettings:
    max_bytes: int = 8 * MiB
    max_records: int = 100_000
    max_age_secs: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    max_bytes: int = 256 * MiB
    #: Entries are also counted: each costs about 1 KiB of memory while it waits, and
    #: quiet files seal small batches, so bytes alone would not bound memory.
    max_entries: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkSettings:
    type: SinkType
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    #: "zstd" or "gzip": how batches are compressed (the object's Content-Encoding).
    codec: Codec = "zstd"
    compression_level: int = 3
    upload_concurrency: int = 4
    #: Under ``prefix``; see :mod:`shipper.batch.objectkey` for the fields and the checks.
    key_template: str = DEFAULT_KEY_TEMPLATE
    #: Static fields for the key template, e.g. ``{ env = "prod" }``.
    key_fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    storage_class: str | None = None
    #: Objects above this many (compressed) bytes go up as multipart uploads.
    multipart_threshold: int = 64 * MiB
    multipart_part_size: int = 16 * MiB
    checksum_algorithm: ChecksumAlgorithm = "CRC32"
    server_side_encryption: ServerSideEncryption | None = None
    kms_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    object_lock_mode: ObjectLockMode | None = None
    object_lock_retain_days: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """Deleting rotated files the ledger proves shipped; both limits off by default."""

    #: A shipped rotated file last written longer ago than this is deleted.
    max_age_secs: float | None = None
    #: While all rotated files together are larger, the oldest shipped ones are deleted.
    max_total_bytes: int | None = None
    #: A rotated file written less than this long ago is never deleted, by retention
    #: or the disk guard: its writer may still hold it (logrotate without a reopen).
    quiet_secs: float = 60.0


OnCritical = Literal["keep", "delete_unshipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSettings:
    """The disk guard, per filesystem holding log files or the state directory."""

    #: Above this fraction in use, shipped rotated files are deleted, oldest first.
    high_watermark: float = 0.90
    #: Above this, ``on_critical`` decides: keep unshipped files (and alert), or delete them.
    critical_watermark: float = 0.95
    on_critical: OnCritical = "keep"
    check_interval_secs: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    listen: str = "127.0.0.1:8686"
    host: str = "127.0.0.1"
    port: int = 8686


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    sources: Mapping[str, SourceSettings]
    sink: SinkSettings
    state_dir: Path = Path("/var/lib/shipper")
    parse: ParseSettings = field(default_factory=ParseSettings)
    enrich: EnrichSettings = field(default_factory=EnrichSettings)
    redact: RedactSettings = field(default_factory=RedactSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    disk: DiskSettings = field(default_factory=DiskSettings)
    poll_interval_secs: float = 1.0
    #: Whether file change events (inotify) wake the reader; off, polling alone finds
    #: changes every ``poll_interval_secs`` (NFS, some overlay filesystems).
    file_events: bool = True
    shutdown_timeout_secs: float = 30.0
    #: Checkpoints of files not seen for this long are forgotten (the files are gone).
    checkpoint_grace_secs: float = 7 * 86400.0
    #: Log files held open at once. Past it, files at their end are closed (parked)
    #: and reopened by fingerprint when they grow, so others can be read.
    max_open_files: int = 512
    #: A file with nothing new for this long is closed until it grows again.
    close_inactive_secs: float = 60.0
    config_path: Path | None = None
    #: Every text ``${VAR}`` took from the environment -> the variable's name. Never
    #: printed: the logs and the HTTP endpoint hide these texts (``shipper.redact_output``).
    expanded_values: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )


def _keys(cls: type, *skip: str) -> tuple[str, ...]:
    """Allowed TOML keys mirror the dataclass fields, so adding a field needs no second list."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


_ROOT_KEYS = _keys(Settings, "config_path", "expanded_values")
_SOURCE_KEYS = _keys(SourceSettings, "name")
_MULTILINE_KEYS = _keys(MultilineSettings)
_MULTILINE_PRESETS = ("python_traceback", "json")
_PARSE_KEYS = ("timestamp_field",)
_ENRICH_KEYS = _keys(EnrichSettings)
_REDACT_KEYS = ("enabled", "key_action", "keys", "detectors", "custom", "hash_key_env")
_CUSTOM_KEYS = ("name", "pattern", "action")
_SAMPLE_KEYS = (
    "key_field",
    "keep_levels_at_or_above",
    "level_fields",
    "rate_field",
    "rules",
    "cap",
)
_RULE_KEYS = ("name", "rate", "match", "key_field")
_CAP_KEYS = _keys(CapLimit)
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: An HMAC key shorter than this is guessable; pseudonyms would name their users.
_MIN_HASH_KEY_BYTES = 16
_BATCH_KEYS = _keys(BatchSettings)
_SPOOL_KEYS = _keys(SpoolSettings)
_SINK_KEYS = _keys(SinkSettings)
_HEALTH_KEYS = _keys(HealthSettings, "host", "port")
_RETENTION_KEYS = _keys(RetentionSettings)
_MIN_CRITICAL_WATERMARK = 0.5
_DISK_KEYS = _keys(DiskSettings)

_SOURCE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
_LISTEN_RE = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d+)")
_REFERENCE_RE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)
_TOML_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (Mapping, "table"),
    (datetime.datetime, "datetime"),
    (datetime.date, "date"),
    (datetime.time, "time"),
)


def find_config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    """Pick the config file: ``-c`` beats ``$SHIPPER_CONFIG`` beats the packaged default.

    Empty values count as unset, so ``SHIPPER_CONFIG=`` does not point at the current directory.
    """
    if cli_value:
        return Path(cli_value)
    from_env = environ.get(CONFIG_ENV_VAR)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the file at ``path``; raise ConfigError on any problem."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem("", f"{path}: cannot read config file: {reason}")]
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path}: invalid TOML: {exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"{path}: not valid UTF-8: {exc}")]) from exc
    env = os.environ if environ is None else environ
    settings = parse_config(data, base_dir=path.absolute().parent, environ=env)
    return dataclasses.replace(settings, config_path=path)


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str]
) -> Settings:
    """Validate already-parsed TOML; pure, so tests need no files.

    No problem's message holds a value expanded from the environment: a value that
    ``${VAR}`` made is described by its variable instead (``got a value from ${VAR}``).
    """
    problems = _Problems()
    root = _Table(_interpolate(data, "", environ, problems), "", problems)
    root.check_keys(_ROOT_KEYS)
    state_dir = _resolve(base_dir, root.string("state_dir", "/var/lib/shipper"))
    sources = _parse_sources(root, base_dir)
    parse = _parse_parse(root.table("parse"))
    enrich = _parse_enrich(root.table("enrich"))
    redact = _parse_redact(root.table("redact"), environ)
    sample = _parse_sample(root.table("sample"))
    batch = _parse_batch(root.table("batch"))
    spool = _parse_spool(root.table("spool"), batch)
    sink = _parse_sink(root.table("sink", required=True), base_dir)
    health = _parse_health(root.table("health"))
    retention = _parse_retention(root.table("retention"))
    disk = _parse_disk(root.table("disk"))
    poll_interval = root.seconds("poll_interval_secs", 1.0)
    shutdown_timeout = root.seconds("shutdown_timeout_secs", 30.0, allow_zero=True)
    file_events = root.boolean("file_events", True)
    checkpoint_grace = root.seconds("checkpoint_grace_secs", 7 * 86400.0)
    max_open_files = root.integer("max_open_files", 512, 1, 1_000_000)
    close_inactive = root.seconds("close_inactive_secs", 60.0)
    if problems or sink is None:
        raise ConfigError(problems.without_expanded_values())
    return Settings(
        state_dir=state_dir,
        sources=MappingProxyType(sources),
        parse=parse,
        enrich=enrich,
        redact=redact,
        sample=sample,
        batch=batch,
        spool=spool,
        sink=sink,
        health=health,
        retention=retention,
        disk=disk,
        poll_interval_secs=poll_interval,
        file_events=file_events,
        shutdown_timeout_secs=shutdown_timeout,
        checkpoint_grace_secs=checkpoint_grace,
        max_open_files=max_open_files,
        close_inactive_secs=close_inactive,
        expanded_values=MappingProxyType(dict(problems.expanded_values)),
    )


class _Problems(list[ConfigProblem]):
    """The problems found so far, and what is needed to word them without a secret.

    Every ``_Table`` of one parse shares this list, so each can tell whether a value
    it reports came from the environment.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Key path -> the variables its string was expanded from.
        self.expanded_from: dict[str, tuple[str, ...]] = {}
        #: Each text taken from the environment -> its variable's name.
        self.expanded_values: dict[str, str] = {}

    def without_expanded_values(self) -> list[ConfigProblem]:
        """The problems, with any text from the environment that a message still holds
        (a value quoted under another key, a library's error) hidden."""
        scrubber = OutputScrubber(self.expanded_values)
        return [ConfigProblem(p.key_path, scrubber.text(p.message)) for p in self]


def _interpolate(value: Any, path: str, environ: Mapping[str, str], problems: _Problems) -> Any:
    """Expand ``${VAR}`` in every string value; keys are left alone so the schema stays fixed."""
    if isinstance(value, str):
        return _expand(value, path, environ, problems)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, _join(path, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(value)]
    return value


def _expand(text: str, path: str, environ: Mapping[str, str], problems: _Problems) -> str:
    """Shell-like expansion: ``${VAR:-default}`` also applies the default when VAR is empty.

    Records which variables the value at ``path`` came from, and what each gave, so
    that no message or log line shows it.
    """
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"]:
            problems.append(ConfigProblem(path, _malformed_message(match.start())))
            return match[0]
        name, default = match["name"], match["default"]
        names.append(name)
        if default is not None and not environ.get(name):
            return default
        if name not in environ:
            problems.append(ConfigProblem(path, f"environment variable {name} is not set"))
            return ""
        return _from_environment(environ[name], name, path, problems)

    expanded = _REFERENCE_RE.sub(replace, text)
    if names:
        problems.expanded_from[path] = tuple(dict.fromkeys(names))
    return expanded


def _from_environment(value: str, name: str, path: str, problems: _Problems) -> str:
    """Values end up in JSON records and object metadata: UTF-8 only."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(ConfigProblem(path, f"environment variable {name} is not valid UTF-8"))
        return ""
    if value:
        problems.expanded_values.setdefault(value, name)
    return value


def _malformed_message(offset: int) -> str:
    return (
        f'malformed "${{" at character {offset + 1}: expected ${{VAR}} or ${{VAR:-default}} '
        "(write $$ for a literal $)"
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    """Name values the way the TOML spec does, since that is what the user wrote."""
    for kind, name in _TOML_TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _resolve(base_dir: Path, value: str) -> Path:
    """Anchor relative paths at the config file, not at whatever directory the daemon runs in."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


class _Table:
    """One TOML table under validation: typed getters record problems and fall back to defaults."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[ConfigProblem]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def problem(self, name: str, message: str) -> None:
        self.problems.append(ConfigProblem(_join(self.path, name), message))

    def expanded_from(self, name: str) -> tuple[str, ...]:
        """The variables the string at ``name`` was expanded from (none: written as it is)."""
        if not isinstance(self.problems, _Problems):
            return ()
        return self.problems.expanded_from.get(_join(self.path, name), ())

    def shown(self, name: str, value: object, *, quoted: bool = True) -> str:
        """How a message quotes the value at ``name``: as it is, or, when it came from
        the environment, by the variables it came from (it may be a secret)."""
        variables = self.expanded_from(name)
        if variables:
            return "a value from " + " and ".join(f"${{{v}}}" for v in variables)
        return f'"{value}"' if quoted else str(value)

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problem(key, f"unknown key{hint}")

    def table(self, name: str, *, required: bool = False) -> _Table | None:
        """Missing optional tables read as empty; None means "already reported, skip it"."""
        if name not in self.data:
            if required:
                self.problem(name, "required")
                return None
            return _Table({}, _join(self.path, name), self.problems)
        raw = self._get(name, Mapping, "a table")
        return None if raw is None else _Table(raw, _join(self.path, name), self.problems)

    def _get(self, name: str, kinds: type | tuple[type, ...], expected: str) -> Any:
        """Return the raw value, or None when absent or of the wrong type (reported)."""
        if name not in self.data:
            return None
        value = self.data[name]
        kinds_tuple = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds_tuple) or (
            isinstance(value, bool) and bool not in kinds_tuple
        ):
            self.problem(name, f"expected {expected}, got {_type_name(value)}")
            return None
        return value

    def string(self, name: str, default: str) -> str:
        value = self.optional_string(name)
        return default if value is None else value

    def optional_string(self, name: str) -> str | None:
        value: str | None = self._get(name, str, "a string")
        if value == "":
            self.problem(name, "must not be empty")
            return None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value: bool | None = self._get(name, bool, "a boolean")
        return default if value is None else value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        """A string from a fixed set; ``default=None`` makes the key required."""
        if name not in self.data and default is None:
            self.problem(name, "required")
        value = self.optional_string(name)
        if value is None:
            return default
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            self.problem(name, f"must be one of {allowed}, got {self.shown(name, value)}")
            return default
        return value

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        return self.choice(name, choices, None) if name in self.data else None

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        value: int | None = self._get(name, int, "an integer")
        if value is None or not self._in_range(name, value, low, high, str):
            return default
        return value

    def size(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw: int | str | None = self._get(
            name, (int, str), 'a size (bytes, or a string like "8MiB")'
        )
        if raw is None:
            return default
        try:
            value = parse_size(raw)
        except ValueError as exc:
            # The parser's message quotes the text; one from the environment is not.
            expanded = self.expanded_from(name)
            self.problem(name, f"invalid size: {self.shown(name, raw)}" if expanded else str(exc))
            return default
        return value if self._in_range(name, value, low, high, _show_size) else default

    def _in_range(
        self, name: str, value: int, low: int, high: int | None, show: Callable[[int], str]
    ) -> bool:
        got = self.shown(name, show(value), quoted=False)
        if high is not None and not low <= value <= high:
            self.problem(name, f"must be between {show(low)} and {show(high)}, got {got}")
            return False
        if value < low:
            self.problem(name, f"must be at least {show(low)}, got {got}")
            return False
        return True

    def seconds(
        self, name: str, default: float, *, allow_zero: bool = False, most: float | None = None
    ) -> float:
        """Durations take ints or floats but never bools or strings like "5s"."""
        raw: int | float | None = self._get(name, (int, float), "a number of seconds")
        if raw is None:
            return default
        try:
            value = float(raw)
        except OverflowError:  # a TOML integer too big for a float
            value = math.inf
        if not math.isfinite(value):
            self.problem(name, f"must be a finite number, got {raw!r}")
        elif value < 0 or (value == 0 and not allow_zero):
            self.problem(
                name, f"must be {'at least' if allow_zero else 'greater than'} 0, got {raw!r}"
            )
        elif most is not None and value > most:
            self.problem(name, f"must be at most {most:g}, got {raw!r}")
        else:
            return value
        return default

    def array_of_tables(self, name: str) -> list[_Table]:
        """``[[name]]`` entries; entries that are not tables are reported and left out."""
        raw: list[Any] | None = self._get(name, list, "an array of tables")
        tables: list[_Table] = []
        for index, item in enumerate(raw or []):
            path = f"{name}[{index}]"
            if isinstance(item, Mapping):
                tables.append(_Table(item, _join(self.path, path), self.problems))
            else:
                self.problem(path, f"expected a table, got {_type_name(item)}")
        return tables

    def fraction(self, name: str, default: float) -> float:
        """A rate from 0 to 1."""
        raw: int | float | None = self._get(name, (int, float), "a number from 0 to 1")
        if raw is None:
            return default
        if not 0.0 <= float(raw) <= 1.0:
            self.problem(name, f"must be between 0 and 1, got {raw!r}")
            return default
        return float(raw)

    def string_list(self, name: str, *, required: bool = False) -> list[str]:
        if required and name not in self.data:
            self.problem(name, "required")
        raw: list[Any] | None = self._get(name, list, "an array of strings")
        if raw is None:
            return []
        if required and not raw:
            self.problem(name, "must not be empty")
        items: list[str] = []
        for index, item in enumerate(raw):
            key = f"{name}[{index}]"
            if not isinstance(item, str):
                self.problem(key, f"expected a string, got {_type_name(item)}")
            elif not item:
                self.problem(key, "must not be empty")
            else:
                items.append(item)
        return items


def _show_size(n: int) -> str:
    """Human units when they are exact, raw bytes otherwise, so messages never mislead."""
    text = format_size(n)
    return text if parse_size(text) == n else f"{n} bytes"


def _parse_sources(root: _Table, base_dir: Path) -> dict[str, SourceSettings]:
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


def _parse_source(name: str, table: _Table, base_dir: Path) -> SourceSettings:
    table.check_keys(_SOURCE_KEYS)
    include = [str(_resolve(base_dir, p)) for p in table.string_list("include", required=True)]
    exclude = [_exclude_pattern(base_dir, p) for p in table.string_list("exclude")]
    read_from = table.choice("read_from", get_args(ReadFrom), "beginning")
    return SourceSettings(
        name=name,
        include=tuple(include),
        exclude=tuple(exclude),
        read_from=cast(ReadFrom, read_from),
        fingerprint_bytes=table.size("fingerprint_bytes", 256, 16, 64 * KiB),
        rotate_wait_secs=table.seconds("rotate_wait_secs", 5.0),
        read_chunk_bytes=table.size("read_chunk_bytes", MiB, 4 * KiB, 64 * MiB),
        max_line_bytes=table.size("max_line_bytes", MiB, 1 * KiB, 256 * MiB),
        multiline=_parse_multiline(table.table("multiline")),
        stale_after_secs=table.seconds("stale_after_secs", 3600.0),
        symlink_targets=tuple(_absolute_paths(table, "symlink_targets")),
    )


def _absolute_paths(table: _Table, name: str) -> list[str]:
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


def _parse_multiline(table: _Table | None) -> MultilineSettings:
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
        timeout_secs=table.seconds("timeout_secs", 1.0, most=3600),
        max_lines=table.integer("max_lines", 500, 1, 1_000_000),
    )


def _exclude_pattern(base_dir: Path, pattern: str) -> str:
    """Slash-free excludes such as "*.gz" match basenames anywhere, so they stay relative."""
    return pattern if "/" not in pattern else str(_resolve(base_dir, pattern))


def _parse_enrich(table: _Table | None) -> EnrichSettings:
    if table is None:
        return EnrichSettings()
    table.check_keys(_ENRICH_KEYS)
    fields_table = table.table("fields")
    fields = {} if fields_table is None else _parse_fields(fields_table)
    return EnrichSettings(
        fields=MappingProxyType(fields),
        host=table.boolean("host", True),
        collision_prefix=table.string("collision_prefix", "shipper_"),
        kubernetes=table.boolean("kubernetes", True),
        file_path=table.boolean("file_path", False),
        file_offset=table.boolean("file_offset", False),
    )


def _parse_parse(table: _Table | None) -> ParseSettings:
    if table is None:
        return ParseSettings()
    table.check_keys(_PARSE_KEYS)
    name = table.optional_string("timestamp_field")
    return ParseSettings() if name is None else ParseSettings(timestamp_fields=(name,))


def _parse_redact(table: _Table | None, environ: Mapping[str, str]) -> RedactSettings:
    if table is None:
        return RedactSettings()
    table.check_keys(_REDACT_KEYS)
    key_action = cast(RedactAction, table.choice("key_action", _REDACT_ACTIONS[:-1], "mask"))
    keys: dict[str, RedactAction] = dict.fromkeys(DEFAULT_SECRET_KEYS, key_action)
    keys_table = table.table("keys")
    for name, choice in _action_table(keys_table).items():
        if not normalise_key(name):
            table.problem(f"keys.{name}", "a key name needs at least one letter or digit")
        elif choice == "off":
            # Any spelling lifts the key: "Set-Cookie" = "off" lifts set_cookie.
            for known in [k for k in keys if normalise_key(k) == normalise_key(name)]:
                del keys[known]
        else:
            keys[name] = choice
    detectors: dict[str, RedactAction] = dict.fromkeys(DETECTOR_NAMES, "mask")
    for name, choice in _action_table(table.table("detectors")).items():
        if name not in DETECTOR_NAMES:
            close = difflib.get_close_matches(name, DETECTOR_NAMES, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            table.problem(f"detectors.{name}", f"unknown detector{hint}")
        elif choice == "off":
            del detectors[name]
        else:
            detectors[name] = choice
    custom = _parse_custom_detectors(table)
    hash_key_env = table.string("hash_key_env", "SHIPPER_HASH_KEY")
    hash_key: bytes | None = None
    if "hash" in (*keys.values(), *detectors.values(), *(a for _, a in custom)):
        value = environ.get(hash_key_env, "")
        # The variable's bytes as they are: a key need not be UTF-8.
        hash_key = value.encode("utf-8", "surrogateescape")
        if len(hash_key) < _MIN_HASH_KEY_BYTES:
            table.problem(
                "hash_key_env",
                f"the hash action needs a key of at least {_MIN_HASH_KEY_BYTES} bytes in "
                f"${hash_key_env}" + (" (it is not set)" if not value else ""),
            )
        elif isinstance(table.problems, _Problems):
            # Read from the environment like a ${VAR}: never printed either.
            table.problems.expanded_values.setdefault(value, hash_key_env)
    return RedactSettings(
        enabled=table.boolean("enabled", True),
        key_action=key_action,
        keys=MappingProxyType(keys),
        detectors=MappingProxyType(detectors),
        custom=tuple(custom),
        hash_key_env=hash_key_env,
        hash_key=hash_key,
    )


def _action_table(table: _Table | None) -> dict[str, RedactChoice]:
    """A table of ``name = "action"``; bad entries are reported and left out."""
    if table is None:
        return {}
    actions: dict[str, RedactChoice] = {}
    for name in table.data:
        choice = table.choice(name, _REDACT_ACTIONS, "mask")
        if choice is not None and isinstance(table.data[name], str):
            actions[name] = cast(RedactChoice, choice)
    return actions


def _parse_custom_detectors(table: _Table) -> list[tuple[Detector, RedactAction]]:
    custom: list[tuple[Detector, RedactAction]] = []
    for entry in table.array_of_tables("custom"):
        item = entry.data
        entry.check_keys(_CUSTOM_KEYS)
        if "name" not in item:
            entry.problem("name", "required")
        name = entry.string("name", "")
        pattern = entry.optional_string("pattern")
        if "pattern" not in item:
            entry.problem("pattern", "required")
        action = cast(RedactAction, entry.choice("action", _REDACT_ACTIONS[:-1], "mask"))
        if name and not _NAME_RE.fullmatch(name):
            entry.problem("name", f"must match ^{_NAME_RE.pattern}$ (it names a counter)")
            continue
        if name in DETECTOR_NAMES or any(d.name == name for d, _ in custom):
            entry.problem("name", f'"{name}" is already a detector\'s name')
            continue
        compiled = _compile(entry, "pattern", pattern)
        if name and compiled is not None:
            if compiled.search("") is not None:
                entry.problem("pattern", "matches the empty string, so it would match everywhere")
            else:
                custom.append((Detector(name, compiled), action))
    return custom


def _compile(table: _Table, name: str, pattern: str | None) -> Any:
    """A pattern that runs on every record: RE2, so its time is linear in the input."""
    if pattern is None:
        return None
    try:
        return compile_linear(pattern)
    except LinearRegexError as exc:
        table.problem(
            name, f"invalid regular expression: {exc} (RE2 syntax: no lookaround or backreferences)"
        )
        return None


def _parse_sample(table: _Table | None) -> SampleSettings:
    if table is None:
        return SampleSettings()
    table.check_keys(_SAMPLE_KEYS)
    key_field = table.optional_string("key_field")
    level_name = table.string("keep_levels_at_or_above", "WARNING")
    keep_level = LEVELS.get(level_name.upper())
    if keep_level is None:
        names = ", ".join(sorted({n for n in LEVELS if n.isalpha()}))
        shown = table.shown("keep_levels_at_or_above", level_name)
        table.problem("keep_levels_at_or_above", f"unknown level {shown} (one of {names})")
        keep_level = 30
    level_fields = table.string_list("level_fields") if "level_fields" in table.data else None
    cap_table = table.table("cap") if "cap" in table.data else None
    return SampleSettings(
        rules=tuple(_parse_rules(table)),
        key_field=None if key_field is None else _path(key_field),
        keep_level=keep_level,
        level_fields=(
            SampleSettings().level_fields
            if level_fields is None
            else tuple(_path(f) for f in level_fields)
        ),
        rate_field=table.string("rate_field", "sample_rate"),
        cap=None if cap_table is None else _parse_cap(cap_table),
    )


def _path(name: str) -> tuple[str, ...]:
    """A field name, dotted for nested objects: "http.status"."""
    return tuple(name.split("."))


def _parse_rules(table: _Table) -> list[SampleRule]:
    rules: list[SampleRule] = []
    for index, entry in enumerate(table.array_of_tables("rules")):
        item = entry.data
        entry.check_keys(_RULE_KEYS)
        name = entry.string("name", f"rule{index + 1}")
        if not _NAME_RE.fullmatch(name):
            entry.problem("name", f"must match ^{_NAME_RE.pattern}$ (it names a counter)")
        elif any(rule.name == name for rule in rules):
            entry.problem("name", f'another rule is already named "{name}"')
        if "rate" not in item:
            entry.problem("rate", "required")
        rate = entry.fraction("rate", 1.0)
        match = entry.table("match", required=True)
        conditions = [] if match is None else _parse_conditions(match)
        key_field = entry.optional_string("key_field")
        rules.append(
            SampleRule(
                name=name,
                rate=rate,
                conditions=tuple(conditions),
                key_field=None if key_field is None else _path(key_field),
            )
        )
    return rules


def _parse_conditions(table: _Table) -> list[FieldCondition]:
    """``field = value``, ``field = [values]`` or ``field = { regex = "..." }``."""
    if not table.data:
        table.problems.append(ConfigProblem(table.path, "needs at least one field condition"))
    conditions: list[FieldCondition] = []
    for name, value in table.data.items():
        if isinstance(value, Mapping):
            sub = _Table(value, _join(table.path, name), table.problems)
            sub.check_keys(("regex",))
            regex = _compile(sub, "regex", sub.optional_string("regex"))
            if "regex" not in value:
                sub.problem("regex", "required")
            if regex is not None:
                conditions.append(FieldCondition(_path(name), regex=regex))
            continue
        values = value if isinstance(value, list) else [value]
        good = [v for v in values if isinstance(v, str | int | float)]
        if not values or len(good) != len(values):
            table.problem(
                name,
                'expected a string, number or boolean, an array of them, or { regex = "..." }',
            )
            continue
        conditions.append(FieldCondition(_path(name), values=tuple(good)))
    return conditions


def _parse_cap(table: _Table | None) -> CapLimit | None:
    if table is None:
        return None
    table.check_keys(_CAP_KEYS)
    if "max_per_sec" not in table.data:
        table.problem("max_per_sec", "required")
    return CapLimit(
        key_field=_path(table.string("key_field", "message")),
        max_per_sec=table.integer("max_per_sec", 100, 1, 10_000_000),
        summary_interval_secs=table.seconds("summary_interval_secs", 60.0, most=86400),
    )


def _parse_fields(table: _Table) -> dict[str, FieldValue]:
    """Fields end up in JSON records, so only JSON scalars (finite numbers) are allowed."""
    fields: dict[str, FieldValue] = {}
    for name, value in table.data.items():
        if not name:
            table.problem(name, "field name must not be empty")
        elif not isinstance(value, str | int | float):
            table.problem(name, f"expected a string, number or boolean, got {_type_name(value)}")
        elif isinstance(value, float) and not math.isfinite(value):
            table.problem(name, f"must be a finite number, got {value!r}")
        else:
            fields[name] = value
    return fields


def _parse_batch(table: _Table | None) -> BatchSettings:
    if table is None:
        return BatchSettings()
    table.check_keys(_BATCH_KEYS)
    return BatchSettings(
        max_bytes=table.size("max_bytes", 8 * MiB, KiB, GiB),
        max_records=table.integer("max_records", 100_000, 1),
        max_age_secs=table.seconds("max_age_secs", 5.0, most=3600),
    )


def _parse_spool(table: _Table | None, batch: BatchSettings) -> SpoolSettings:
    """The spool must hold at least one full batch, or a batch could never be spooled."""
    if table is None:
        return SpoolSettings()
    table.check_keys(_SPOOL_KEYS)
    reported = len(table.problems)
    max_bytes = table.size("max_bytes", 256 * MiB, 0)
    if len(table.problems) == reported and max_bytes < batch.max_bytes:
        limit = _show_size(batch.max_bytes)
        table.problem("max_bytes", f"must be at least batch.max_bytes ({limit})")
    max_entries = table.integer("max_entries", 10_000, 1, 1_000_000)
    return SpoolSettings(max_bytes=max_bytes, max_entries=max_entries)


def _parse_sink(table: _Table | None, base_dir: Path) -> SinkSettings | None:
    if table is None:
        return None
    table.check_keys(_SINK_KEYS)
    sink_type = table.choice("type", get_args(SinkType), None)
    path = table.optional_string("path")
    bucket = table.optional_string("bucket")
    for needed, required_by in (("path", "directory"), ("bucket", "s3")):
        if sink_type == required_by and needed not in table.data:
            table.problem(needed, f'required when sink.type = "{required_by}"')
    if bucket is not None:
        shown = table.shown("bucket", bucket)
        if table.expanded_from("bucket"):
            shown = f"({shown})"
        if reason := _bucket_problem(bucket, shown):
            table.problem("bucket", reason)
    prefix = table.string("prefix", "").strip("/")
    if "//" in prefix or ".." in prefix.split("/"):
        shown = table.shown("prefix", prefix)
        table.problem("prefix", f'must not contain "//" or ".." segments, got {shown}')
    endpoint_url = table.optional_string("endpoint_url")
    if endpoint_url is not None and (
        reason := _endpoint_problem(endpoint_url, table.shown("endpoint_url", endpoint_url))
    ):
        table.problem("endpoint_url", reason)
    codec = cast(Codec, table.choice("codec", get_args(Codec), "zstd"))
    key_fields = _string_table(table, "key_fields")
    key_template = table.string("key_template", DEFAULT_KEY_TEMPLATE)
    try:
        compile_template(key_template, prefix=prefix, static=key_fields, codec=codec)
    except KeyTemplateError as exc:
        table.problem("key_template", str(exc))
    store = _parse_store_options(table, s3=(sink_type or "directory") == "s3")
    return SinkSettings(
        type=cast(SinkType, sink_type or "directory"),
        path=None if path is None else _resolve(base_dir, path),
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint_url,
        region=table.optional_string("region"),
        codec=codec,
        compression_level=table.integer(
            "compression_level", DEFAULT_COMPRESSION_LEVEL[codec], 1, 22 if codec == "zstd" else 9
        ),
        upload_concurrency=table.integer("upload_concurrency", 4, 1, 64),
        key_template=key_template,
        key_fields=MappingProxyType(key_fields),
        **store,
    )


#: Settings that only an S3 store understands.
_S3_ONLY = (
    "storage_class",
    "server_side_encryption",
    "kms_key_id",
    "tags",
    "object_lock_mode",
    "object_lock_retain_days",
    "multipart_threshold",
    "multipart_part_size",
)


def _parse_store_options(table: _Table, *, s3: bool) -> dict[str, Any]:
    """Storage class, encryption, tags, Object Lock, checksums and multipart sizes."""
    if not s3:
        for name in _S3_ONLY:
            if name in table.data:
                table.problem(name, 'only applies to sink.type = "s3"')
    sse = table.optional_choice("server_side_encryption", get_args(ServerSideEncryption))
    kms_key_id = table.optional_string("kms_key_id")
    if kms_key_id is not None and sse != "aws:kms":
        table.problem("kms_key_id", 'needs server_side_encryption = "aws:kms"')
    lock_mode = table.optional_choice("object_lock_mode", get_args(ObjectLockMode))
    retain_days = (
        table.integer("object_lock_retain_days", 1, 1, 36500)
        if "object_lock_retain_days" in table.data
        else None
    )
    if (lock_mode is None) != (retain_days is None):
        table.problem(
            "object_lock_mode" if lock_mode is None else "object_lock_retain_days",
            "object_lock_mode and object_lock_retain_days go together",
        )
    tags = _string_table(table, "tags")
    if len(tags) > 10:
        table.problem("tags", f"at most 10 tags (an S3 limit), got {len(tags)}")
    for name, value in tags.items():
        if len(name) > 128 or len(value) > 256:
            table.problem(f"tags.{name}", "keys are at most 128 characters, values 256")
    part_size = table.size("multipart_part_size", 16 * MiB, 5 * MiB, 5 * 1024 * MiB)
    return {
        "storage_class": table.optional_string("storage_class"),
        "multipart_threshold": table.size("multipart_threshold", 64 * MiB, 1, 5 * 1024 * MiB),
        "multipart_part_size": part_size,
        "checksum_algorithm": table.choice(
            "checksum_algorithm", get_args(ChecksumAlgorithm), "CRC32"
        ),
        "server_side_encryption": sse,
        "kms_key_id": kms_key_id,
        "tags": MappingProxyType(tags),
        "object_lock_mode": lock_mode,
        "object_lock_retain_days": retain_days,
    }


def _string_table(table: _Table, name: str) -> dict[str, str]:
    """A table of string values (``tags``, ``key_fields``); others are reported."""
    sub = table.table(name)
    if sub is None:
        return {}
    values: dict[str, str] = {}
    for key, value in sub.data.items():
        if not isinstance(value, str):
            sub.problem(key, f"expected a string, got {_type_name(value)}")
        else:
            values[key] = value
    return values


def _bucket_problem(bucket: str, shown: str) -> str | None:
    """S3 naming rules, checked early so a typo fails at startup rather than at first upload.

    ``shown`` is how the message quotes the name (see ``_Table.shown``).
    """
    if not 3 <= len(bucket) <= 63 or not _BUCKET_RE.fullmatch(bucket):
        return (
            f"invalid bucket name {shown}: use 3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    if ".." in bucket:
        return f'invalid bucket name {shown}: must not contain ".."'
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return None
    return f"invalid bucket name {shown}: must not look like an IP address"


#: Where the S3 sink's credentials come from instead of the config (as the README says).
_CREDENTIALS_HINT = (
    "credentials come from boto3's default chain: the environment variables"
    " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE), or an"
    " instance or pod role"
)


def _endpoint_problem(url: str, shown: str) -> str | None:
    """Where requests go, and only that: the URL is printed in errors and logged by
    libraries, so it must carry no credentials, and no query string (a presigned one
    holds a signature). Neither is ever quoted back."""
    # Any "@" counts: a password may hold an unescaped "/", "?" or "#" before it.
    if "@" in url:
        return f"must not contain credentials (user:password@); {_CREDENTIALS_HINT}"
    if "?" in url or "#" in url:
        return "must not contain a query string or fragment: it says where the store is, no more"
    if not _is_http_url(url):
        return f"must be an http:// or https:// URL with a host, got {shown}"
    return None


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _parse_retention(table: _Table | None) -> RetentionSettings:
    if table is None:
        return RetentionSettings()
    table.check_keys(_RETENTION_KEYS)
    # Both off unless set; a bad value is reported (and the config refused).
    max_age = table.seconds("max_age_secs", 0.0) if "max_age_secs" in table.data else None
    # 0 is allowed: keep no rotated file once it is shipped.
    max_total = table.size("max_total_bytes", 0, 0) if "max_total_bytes" in table.data else None
    return RetentionSettings(
        max_age_secs=max_age,
        max_total_bytes=max_total,
        quiet_secs=table.seconds("quiet_secs", RetentionSettings().quiet_secs, most=86400),
    )


def _parse_disk(table: _Table | None) -> DiskSettings:
    """The watermarks are fractions of the filesystem in use; critical at or above high."""
    if table is None:
        return DiskSettings()
    table.check_keys(_DISK_KEYS)
    defaults = DiskSettings()
    reported = len(table.problems)
    high = table.fraction("high_watermark", defaults.high_watermark)
    critical = table.fraction("critical_watermark", defaults.critical_watermark)
    if len(table.problems) == reported and critical < _MIN_CRITICAL_WATERMARK:
        # Below half full is no emergency; with delete_unshipped it would delete the
        # unshipped rotated files on every pass.
        table.problem(
            "critical_watermark", f"must be at least {_MIN_CRITICAL_WATERMARK}, got {critical}"
        )
    elif len(table.problems) == reported and critical < high:
        table.problem(
            "critical_watermark", f"must be at least high_watermark ({high}), got {critical}"
        )
    on_critical = table.choice("on_critical", get_args(OnCritical), defaults.on_critical)
    return DiskSettings(
        high_watermark=high,
        critical_watermark=critical,
        on_critical=cast(OnCritical, on_critical),
        check_interval_secs=table.seconds(
            "check_interval_secs", defaults.check_interval_secs, most=3600
        ),
    )


def _parse_health(table: _Table | None) -> HealthSettings:
    if table is None:
        return HealthSettings()
    table.check_keys(_HEALTH_KEYS)
    listen = table.string("listen", "127.0.0.1:8686")
    try:
        host, port = _split_listen(listen, table.shown("listen", listen))
    except ValueError as exc:
        table.problem("listen", str(exc))
        return HealthSettings()
    return HealthSettings(listen=listen, host=host, port=port)


def _split_listen(listen: str, shown: str) -> tuple[str, int]:
    """Split "host:port"; IPv6 hosts need brackets, as in URLs, to keep the port unambiguous.

    ``shown`` is how a message quotes ``listen`` (see ``_Table.shown``).
    """
    match = _LISTEN_RE.fullmatch(listen)
    if match is None:
        raise ValueError(f'expected "host:port", got {shown}')
    host = match["host"]
    if host is None:
        host = match["v6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {shown}") from None
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    return host, port
