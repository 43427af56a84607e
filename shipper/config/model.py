"""The settings a config file gives: frozen dataclasses, each default and bound declared once.

A field's default is the value when the key is absent; its bounds (``setting``) are
checked by the reader when the key is present. Neither is written anywhere else.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_COMPRESSION_LEVEL",
    "BatchSettings",
    "Bounds",
    "ChecksumAlgorithm",
    "Codec",
    "DiskSettings",
    "EnrichSettings",
    "FieldValue",
    "HealthSettings",
    "MultilineSettings",
    "ObjectLockMode",
    "OnCritical",
    "ParseSettings",
    "ReadFrom",
    "RedactChoice",
    "RedactSettings",
    "RetentionSettings",
    "SampleSettings",
    "ServerSideEncryption",
    "Settings",
    "SinkSettings",
    "SinkType",
    "SourceSettings",
    "SpoolSettings",
    "allowed_keys",
    "bounds_of",
    "default_of",
    "setting",
]

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from shipper.batch.objectkey import DEFAULT_KEY_TEMPLATE
from shipper.transform.redact.detectors import DETECTOR_NAMES, Detector
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS, RedactAction
from shipper.transform.sample import CapLimit, SampleRule
from shipper.units import GiB, KiB, MiB

_T = TypeVar("_T")
_BOUNDS = "shipper.bounds"


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a present key's value may be. Seconds are greater than 0 unless ``allow_zero``."""

    at_least: int | None = None
    at_most: int | float | None = None
    allow_zero: bool = False


def setting(
    default: _T,
    *,
    at_least: int | None = None,
    at_most: int | float | None = None,
    allow_zero: bool = False,
) -> _T:
    """A field with its default and the bounds the reader enforces, side by side."""
    bounds = Bounds(at_least, at_most, allow_zero)
    return field(default=default, metadata={_BOUNDS: bounds})


def default_of(model: type, name: str) -> Any:
    """The declared default of ``model.name`` (a ``default_factory`` is called)."""
    declared = _field(model, name)
    if declared.default is not dataclasses.MISSING:
        return declared.default
    if declared.default_factory is not dataclasses.MISSING:
        return declared.default_factory()
    raise KeyError(f"{model.__name__}.{name} has no default")


def bounds_of(model: type, name: str) -> Bounds:
    bounds = _field(model, name).metadata.get(_BOUNDS)
    return bounds if isinstance(bounds, Bounds) else Bounds()


def allowed_keys(model: type, *skip: str) -> tuple[str, ...]:
    """Allowed TOML keys mirror the dataclass fields, so adding a field needs no second list."""
    return tuple(f.name for f in dataclasses.fields(model) if f.name not in skip)


def _field(model: type, name: str) -> dataclasses.Field[Any]:
    for declared in dataclasses.fields(model):
        if declared.name == name:
            return declared
    raise KeyError(f"{model.__name__} has no field {name!r}")


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
    timeout_secs: float = setting(1.0, at_most=3600)
    max_lines: int = setting(500, at_least=1, at_most=1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceSettings:
    name: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    read_from: ReadFrom = "beginning"
    fingerprint_bytes: int = setting(256, at_least=16, at_most=64 * KiB)
    rotate_wait_secs: float = 5.0
    read_chunk_bytes: int = setting(MiB, at_least=4 * KiB, at_most=64 * MiB)
    #: Longer lines are cut to this length and flagged "truncated"; the rest is skipped.
    max_line_bytes: int = setting(MiB, at_least=KiB, at_most=256 * MiB)
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
    max_bytes: int = setting(8 * MiB, at_least=KiB, at_most=GiB)
    max_records: int = setting(100_000, at_least=1)
    max_age_secs: float = setting(5.0, at_most=3600)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolSettings:
    #: At least ``batch.max_bytes``: the spool must hold one full batch.
    max_bytes: int = setting(256 * MiB, at_least=0)
    #: Entries are also counted: each costs about 1 KiB of memory while it waits, and
    #: quiet files seal small batches, so bytes alone would not bound memory.
    max_entries: int = setting(10_000, at_least=1, at_most=1_000_000)


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
    #: Bounded by the codec: 1-22 for zstd, 1-9 for gzip.
    compression_level: int = DEFAULT_COMPRESSION_LEVEL["zstd"]
    upload_concurrency: int = setting(4, at_least=1, at_most=64)
    #: Under ``prefix``; see :mod:`shipper.batch.objectkey` for the fields and the checks.
    key_template: str = DEFAULT_KEY_TEMPLATE
    #: Static fields for the key template, e.g. ``{ env = "prod" }``.
    key_fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    storage_class: str | None = None
    #: Objects above this many (compressed) bytes go up as multipart uploads.
    multipart_threshold: int = setting(64 * MiB, at_least=1, at_most=5 * GiB)
    multipart_part_size: int = setting(16 * MiB, at_least=5 * MiB, at_most=5 * GiB)
    checksum_algorithm: ChecksumAlgorithm = "CRC32"
    server_side_encryption: ServerSideEncryption | None = None
    kms_key_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    object_lock_mode: ObjectLockMode | None = None
    object_lock_retain_days: int | None = setting(None, at_least=1, at_most=36500)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionSettings:
    """Deleting rotated files the ledger proves shipped; both limits off by default."""

    #: A shipped rotated file last written longer ago than this is deleted.
    max_age_secs: float | None = None
    #: While all rotated files together are larger, the oldest shipped ones are deleted.
    max_total_bytes: int | None = setting(None, at_least=0)
    #: A rotated file written less than this long ago is never deleted, by retention
    #: or the disk guard: its writer may still hold it (logrotate without a reopen).
    quiet_secs: float = setting(60.0, at_most=86400)


OnCritical = Literal["keep", "delete_unshipped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskSettings:
    """The disk guard, per filesystem holding log files or the state directory."""

    #: Above this fraction in use, shipped rotated files are deleted, oldest first.
    high_watermark: float = 0.90
    #: Above this, ``on_critical`` decides: keep unshipped files (and alert), or delete them.
    critical_watermark: float = 0.95
    on_critical: OnCritical = "keep"
    check_interval_secs: float = setting(10.0, at_most=3600)


_HEALTH_HOST = "127.0.0.1"
_HEALTH_PORT = 8686


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    listen: str = f"{_HEALTH_HOST}:{_HEALTH_PORT}"
    #: ``listen`` split; the config sets ``listen`` alone.
    host: str = _HEALTH_HOST
    port: int = _HEALTH_PORT


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
    shutdown_timeout_secs: float = setting(30.0, allow_zero=True)
    #: Checkpoints of files not seen for this long are forgotten (the files are gone).
    checkpoint_grace_secs: float = 7 * 86400.0
    #: Log files held open at once. Past it, files at their end are closed (parked)
    #: and reopened by fingerprint when they grow, so others can be read.
    max_open_files: int = setting(512, at_least=1, at_most=1_000_000)
    #: A file with nothing new for this long is closed until it grows again.
    close_inactive_secs: float = 60.0
    config_path: Path | None = None
    #: Every text ``${VAR}`` took from the environment -> the variable's name. Never
    #: printed: the logs and the HTTP endpoint hide these texts (``shipper.redact_output``).
    expanded_values: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
