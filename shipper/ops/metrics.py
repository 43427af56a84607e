"""Prometheus metrics: read from the daemon's counters and state at each scrape.

A registry per daemon (never the global one), so tests and reloads start clean.
Counters keep the daemon's own names as label values: ``records_total{outcome=
"sampled_out"}``, ``redacted_total{detector="email"}``. Nothing here carries a
record's content or a credential.
"""

from __future__ import annotations

__all__ = ["Metrics", "MetricsSource"]

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shipper import __version__
from shipper.housekeeping.retention import disk_usage
from shipper.ops.status import FileStatus

#: Chain and reader counters that count records by what became of them.
RECORD_OUTCOMES = (
    "parsed",
    "wrapped",
    "invalid_utf8",
    "nonstandard_json",
    "unencodable",
    "truncated",
    "partial",
    "sampled_out",
    "capped",
    "dropped",
)


class MetricsSource(Protocol):
    """What the daemon offers to a scrape."""

    def counters(self) -> Mapping[str, int]: ...
    def file_status(self) -> list[FileStatus]: ...
    def metric_gauges(self) -> Mapping[str, float | None]: ...
    def filesystem_usage(self) -> Mapping[str, float]: ...

    @property
    def state_dir(self) -> Path: ...


class Metrics:
    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.upload_seconds = Histogram(
            "shipper_upload_duration_seconds",
            "Time of the attempt that delivered each batch.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.registry.register(_Snapshot(source))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Snapshot(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        counters = dict(self.source.counters())
        yield _counter("lines_read", "Lines read from the log files.", counters.get("lines_read"))
        yield _counter("bytes_read", "Bytes read from the log files.", counters.get("bytes_read"))
        records = CounterMetricFamily("shipper_records", "Records by outcome.", labels=["outcome"])
        for outcome in RECORD_OUTCOMES:
            records.add_metric([outcome], counters.get(outcome, 0))
        records.add_metric(["shipped"], counters.get("records_shipped", 0))
        yield records
        yield _labelled(counters, "redacted_", "shipper_redacted", "Values redacted.", "detector")
        yield _labelled(
            counters, "sampled_out_", "shipper_sampled_out", "Records sampled out.", "rule"
        )
        yield _labelled(counters, "retries_", "shipper_upload_retries", "Upload retries.", "reason")
        objects = CounterMetricFamily(
            "shipper_objects_uploaded", "Objects delivered.", labels=["outcome"]
        )
        for outcome in ("stored", "already_present"):
            objects.add_metric([outcome], counters.get(f"objects_{outcome}", 0))
        yield objects
        yield _counter(
            "uploaded_bytes", "Compressed bytes delivered.", counters.get("bytes_uploaded")
        )
        yield _counter(
            "quarantined", "Batches the store rejected for good.", counters.get("quarantined")
        )
        yield _counter(
            "spool_refilled",
            "Damaged spool entries whose lines were read again.",
            counters.get("spool_refilled"),
        )
        yield _counter(
            "spool_lost", "Damaged spool entries whose lines were lost.", counters.get("spool_lost")
        )
        yield _labelled(
            counters,
            "pruned_entries_",
            "shipper_spool_pruned_entries",
            "Set-aside spool entries dropped past their bound (age or size).",
            "directory",
        )
        yield _labelled(
            counters,
            "pruned_bytes_",
            "shipper_spool_pruned_bytes",
            "Bytes of set-aside spool entries dropped past their bound.",
            "directory",
        )
        yield _labelled(
            counters,
            "deleted_files_",
            "shipper_deleted_files",
            "Rotated files deleted by retention or the disk guard.",
            "reason",
        )
        yield _labelled(
            counters,
            "deleted_bytes_",
            "shipper_deleted_bytes",
            "Bytes of shipped rotated files deleted.",
            "reason",
        )
        yield _labelled(
            counters,
            "refused_",
            "shipper_files_refused",
            "Paths the globs match that are never read, each counted once: a symlink"
            " out of the allowed directories, a FIFO, socket, device or directory.",
            "reason",
        )
        for what in ("files", "lines", "bytes"):
            yield _counter(
                f"lost_{what}",
                f"Unshipped {what} deleted above the critical watermark (each has a gap record).",
                counters.get(f"lost_{what}"),
            )
        yield _counter(
            "compressed_refused",
            "Compressed files refused as compression bombs: left unread, never deleted.",
            counters.get("compressed_refused"),
        )
        gauges = self.source.metric_gauges()
        for name, (help_text, key) in _GAUGES.items():
            value = gauges.get(key)
            if value is not None:
                yield GaugeMetricFamily(f"shipper_{name}", help_text, value=value)
        backlog = GaugeMetricFamily(
            "shipper_backlog_bytes", "Bytes in the files not yet shipped.", labels=["source"]
        )
        stale = GaugeMetricFamily(
            "shipper_stale_files", "Live files not written for stale_after_secs.", labels=["source"]
        )
        by_source: dict[str, list[FileStatus]] = {}
        for status in self.source.file_status():
            by_source.setdefault(status.source, []).append(status)
        for source, files in sorted(by_source.items()):
            backlog.add_metric([source], sum(f.lag_bytes for f in files))
            stale.add_metric([source], sum(1 for f in files if f.stale))
        yield backlog
        yield stale
        usage = dict(self.source.filesystem_usage())
        if not usage:  # before the guard's first pass
            state_dir = self.source.state_dir
            with contextlib.suppress(OSError):
                place = state_dir if state_dir.exists() else state_dir.parent
                usage[str(state_dir)] = disk_usage(str(place)).ratio
        filesystems = GaugeMetricFamily(
            "shipper_filesystem_used_ratio",
            "Fraction in use of each filesystem the disk guard watches (by a path on it).",
            labels=["path"],
        )
        for path, ratio in sorted(usage.items()):
            filesystems.add_metric([path], ratio)
        yield filesystems
        info = GaugeMetricFamily("shipper_build_info", "Build information.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


_GAUGES: dict[str, tuple[str, str]] = {
    "spool_bytes": ("Bytes in the spool.", "spool_bytes"),
    "spool_entries": ("Batches in the spool.", "spool_entries"),
    "last_upload_timestamp_seconds": (
        "Unix time of the last delivery.",
        "last_success",
    ),
    "ready": ("1 when ready (see /readyz).", "ready"),
    "disk_critical": ("1 while a watched filesystem is above critical_watermark.", "disk_critical"),
}


def _counter(name: str, help_text: str, value: Any) -> CounterMetricFamily:
    return CounterMetricFamily(f"shipper_{name}", help_text, value=value or 0)


def _labelled(
    counters: Mapping[str, int], prefix: str, name: str, help_text: str, label: str
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=[label])
    for key, value in sorted(counters.items()):
        if key.startswith(prefix):
            family.add_metric([key.removeprefix(prefix)], value)
    return family
