"""``[retention]`` and ``[disk]``: which rotated files may be deleted, and when."""

from __future__ import annotations

from typing import cast, get_args

from shipper.config.model import DiskSettings, OnCritical, RetentionSettings, allowed_keys
from shipper.config.reader import Declared, Table

_RETENTION_KEYS = allowed_keys(RetentionSettings)
_MIN_CRITICAL_WATERMARK = 0.5


_DISK_KEYS = allowed_keys(DiskSettings)


def parse_retention(table: Table | None) -> RetentionSettings:
    if table is None:
        return RetentionSettings()
    table.check_keys(_RETENTION_KEYS)
    declared = Declared(table, RetentionSettings)
    # Both off unless set; a bad value is reported (and the config refused).
    return RetentionSettings(
        max_age_secs=declared.optional_seconds("max_age_secs"),
        # 0 is allowed: keep no rotated file once it is shipped.
        max_total_bytes=declared.optional_size("max_total_bytes"),
        quiet_secs=declared.seconds("quiet_secs"),
    )


def parse_disk(table: Table | None) -> DiskSettings:
    """The watermarks are fractions of the filesystem in use; critical at or above high."""
    if table is None:
        return DiskSettings()
    table.check_keys(_DISK_KEYS)
    declared = Declared(table, DiskSettings)
    reported = len(table.problems)
    high = declared.fraction("high_watermark")
    critical = declared.fraction("critical_watermark")
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
    on_critical = declared.choice("on_critical", get_args(OnCritical))
    return DiskSettings(
        high_watermark=high,
        critical_watermark=critical,
        on_critical=cast(OnCritical, on_critical),
        check_interval_secs=declared.seconds("check_interval_secs"),
    )
