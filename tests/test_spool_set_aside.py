"""What the spool sets aside is bounded; its directories are private and durable."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.batch.pack import PackedBatch
from shipper.batch.segment import Segment
from shipper.deliver.sinks import directory as directory_sink
from shipper.deliver.sinks.base import ObjectToPut, PutOutcome
from shipper.deliver.sinks.directory import DirectorySink
from shipper.files import dirs
from shipper.files.fingerprint import Fingerprint
from shipper.ops.metrics import Metrics
from shipper.ops.status import FileStatus
from shipper.spool import spool as spool_module
from shipper.spool.entry import DamagedEntry, SpoolEntry
from shipper.spool.spool import SetAsideBound, Spool

FP = Fingerprint(dev=1, ino=2, head_len=10, head_sha256="ab" * 32)
UNBOUNDED = SetAsideBound(max_bytes=1 << 40, max_age_secs=1e9)
DAY = 86400.0


def seal(spool: Spool, start: int, body: bytes = b"z" * 1000) -> SpoolEntry:
    return spool.seal(
        PackedBatch(
            key=f"k-{start}",
            source="app",
            segments=(Segment(FP, "/l/app.log", start, start + 10, 3),),
            records=3,
            body=body,
            body_sha256="00" * 32,
            uncompressed_bytes=99,
            codec="zstd",
            first_time=1.0,
        )
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def age(path: Path, days: float) -> None:
    """Make what was set aside in ``path`` within the last hour look set aside ``days`` ago."""
    now = time.time()
    for item in path.iterdir():
        if item.stat().st_mtime > now - 3600:
            os.utime(item, (now - days * DAY,) * 2)


@pytest.fixture
def umask() -> Iterator[None]:
    """A umask that would make new directories world-readable (and more)."""
    previous = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(previous)


def test_quarantine_keeps_within_its_size_dropping_the_oldest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = Spool(tmp_path / "probe", quarantine_bound=UNBOUNDED)
    probe.recover()
    probe.quarantine(seal(probe, 0), reason="HTTP 400 InvalidArgument")
    item_bytes = sum(p.stat().st_size for p in (tmp_path / "probe/quarantine").iterdir())
    bound = SetAsideBound(max_bytes=item_bytes * 5 // 2, max_age_secs=1e9)
    spool = Spool(tmp_path / "spool", quarantine_bound=bound)
    spool.recover()
    quarantine = tmp_path / "spool" / "quarantine"
    for start, days_ago in ((0, 3), (10, 2)):
        spool.quarantine(seal(spool, start), reason="HTTP 400 InvalidArgument")
        age(quarantine, days=days_ago)  # set aside one after the other
    with caplog.at_level(logging.WARNING, logger="shipper.spool.spool"):
        spool.quarantine(seal(spool, 20), reason="HTTP 400 InvalidArgument")
        spool.quarantine(seal(spool, 30), reason="HTTP 400 InvalidArgument")
    # Two entries are kept, each with its reason; the two oldest went.
    assert len(list(quarantine.iterdir())) == 4
    assert sum(p.stat().st_size for p in quarantine.iterdir()) <= bound.max_bytes
    assert spool.counters["pruned_entries_quarantine"] == 2
    # (Reasons differ by a few bytes: their keys and times.)
    assert abs(spool.counters["pruned_bytes_quarantine"] - 2 * item_bytes) < 20
    dropped = [r for r in caplog.records if r.getMessage().startswith("set-aside spool entry")]
    assert len(dropped) == 2 and all(r.levelno == logging.WARNING for r in dropped)
    assert [r.__dict__["held_key"] for r in dropped] == ["k-0", "k-10"]
    assert all(r.__dict__["path"].startswith(str(quarantine)) for r in dropped)


def test_the_entry_just_quarantined_stays_even_when_larger_than_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quarantine_bound=SetAsideBound(max_bytes=100, max_age_secs=1e9))
    spool.recover()
    spool.quarantine(seal(spool, 0), reason="rejected")
    assert len(list((tmp_path / "quarantine").glob("*.entry"))) == 1
    assert spool.counters["pruned_entries_quarantine"] == 0
    spool.quarantine(seal(spool, 10), reason="rejected")  # the older one goes
    [kept] = (tmp_path / "quarantine").glob("*.reason.json")
    assert b'"k-10"' in kept.read_bytes()


def test_old_set_aside_entries_go_at_the_next_start(tmp_path: Path) -> None:
    bound = SetAsideBound(max_bytes=1 << 30, max_age_secs=7 * DAY)
    spool = Spool(tmp_path, quarantine_bound=bound, corrupt_bound=bound)
    spool.recover()
    spool.quarantine(seal(spool, 0), reason="rejected")
    damaged = seal(spool, 10)
    spool.set_aside(DamagedEntry(damaged.path, "body checksum mismatch", FP.id, 10, 20))
    recent = seal(spool, 20)
    spool.set_aside(DamagedEntry(recent.path, "body checksum mismatch", FP.id, 20, 30))
    age(tmp_path / "quarantine", days=8)
    os.utime(tmp_path / "corrupt" / damaged.path.name, (time.time() - 8 * DAY,) * 2)
    again = Spool(tmp_path, quarantine_bound=bound, corrupt_bound=bound)
    again.recover()
    assert list((tmp_path / "quarantine").iterdir()) == []
    assert [p.name for p in (tmp_path / "corrupt").iterdir()] == [recent.path.name]
    assert again.counters["pruned_entries_quarantine"] == 1
    assert again.counters["pruned_entries_corrupt"] == 1


def test_set_aside_is_not_counted_in_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quarantine_bound=UNBOUNDED)
    spool.recover()
    spool.quarantine(seal(spool, 0), reason="rejected")
    assert (spool.used_bytes, spool.entry_count) == (0, 0)
    again = Spool(tmp_path)
    assert again.recover() == ([], [])
    assert again.used_bytes == 0


@pytest.mark.usefixtures("umask")
def test_spool_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state" / "spool")
    spool.recover()
    spool.quarantine(seal(spool, 0), reason="rejected")
    entry = seal(spool, 10)
    spool.set_aside(DamagedEntry(entry.path, "damaged", FP.id, 10, 20))
    for directory in ("state", "state/spool", "state/spool/quarantine", "state/spool/corrupt"):
        assert mode(tmp_path / directory) == 0o700, directory


def test_a_narrow_umask_does_not_leave_the_owner_without_write(tmp_path: Path) -> None:
    previous = os.umask(0o277)
    try:
        Spool(tmp_path / "spool").recover()
    finally:
        os.umask(previous)
    assert mode(tmp_path / "spool") == 0o700


def test_spool_directories_an_older_version_made_wider_are_narrowed(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    (spool_dir / "quarantine").mkdir(parents=True)
    spool_dir.chmod(0o755)
    (spool_dir / "quarantine").chmod(0o775)
    operators = tmp_path / "narrow"
    operators.mkdir(mode=0o500)
    Spool(spool_dir).recover()
    assert mode(spool_dir) == mode(spool_dir / "quarantine") == 0o700
    assert dirs.narrow_mode(operators, 0o700) is False  # bits are never added
    assert mode(operators) == 0o500


def test_make_dirs_fsyncs_each_new_name_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(dirs, "fsync_dir", synced.append)
    (tmp_path / "a").mkdir()
    created = dirs.make_dirs(tmp_path / "a" / "b" / "c", 0o750)
    assert created == [tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert synced == [tmp_path / "a", tmp_path / "a" / "b"]
    assert dirs.make_dirs(tmp_path / "a" / "b" / "c", 0o750) == []
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(FileExistsError):
        dirs.make_dirs(blocker / "x", 0o700)


def test_spool_deletions_and_moves_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, quarantine_bound=SetAsideBound(max_bytes=10, max_age_secs=1e9))
    spool.recover()
    first, second, third = seal(spool, 0), seal(spool, 10), seal(spool, 20)
    synced: list[Path] = []
    monkeypatch.setattr(spool_module, "fsync_dir", synced.append)
    spool.remove(first)
    assert synced == [tmp_path]
    synced.clear()
    spool.quarantine(second, reason="rejected")
    assert synced == [tmp_path / "quarantine", tmp_path]
    synced.clear()
    spool.quarantine(third, reason="rejected")  # and the older one is dropped
    assert synced == [tmp_path / "quarantine", tmp_path, tmp_path / "quarantine"]


@pytest.mark.usefixtures("umask")
def test_directory_sink_partitions_are_0750_and_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_fsync = dirs.fsync_dir

    def record(path: Path) -> None:
        synced.append(path)
        real_fsync(path)

    monkeypatch.setattr(dirs, "fsync_dir", record)
    root = tmp_path / "shipped"
    root.mkdir(mode=0o755)
    key = "p/source=a/dt=2026-01-02/hour=03/x.ndjson.zst"
    sink = DirectorySink(root)
    assert sink.put(ObjectToPut(key=key, body=b"one", metadata={})) is PutOutcome.STORED
    hour = root / "p/source=a/dt=2026-01-02/hour=03"
    for directory in (hour, hour.parent, hour.parent.parent, root / "p"):
        assert mode(directory) == directory_sink.SINK_DIR_MODE, directory
    assert mode(root) == 0o755  # the operator's: left alone
    # Each new directory's name, in its parent.
    assert synced == [root, root / "p", root / "p/source=a", hour.parent]


class _Source:
    """What a scrape reads, with set-aside entries dropped."""

    state_dir = Path("/nonexistent/state")

    def counters(self) -> dict[str, int]:
        return {"pruned_entries_quarantine": 2, "pruned_bytes_quarantine": 3500}

    def file_status(self) -> list[FileStatus]:
        return []

    def metric_gauges(self) -> dict[str, float | None]:
        return {}

    def filesystem_usage(self) -> dict[str, float]:
        return {"/": 0.5}


def test_dropped_entries_are_counted_in_the_metrics() -> None:
    text = Metrics(_Source()).render().decode()
    assert 'shipper_spool_pruned_entries_total{directory="quarantine"} 2.0' in text
    assert 'shipper_spool_pruned_bytes_total{directory="quarantine"} 3500.0' in text


def test_a_failure_to_prune_does_not_undo_the_quarantine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, quarantine_bound=SetAsideBound(max_bytes=10, max_age_secs=1e9))
    spool.recover()
    spool.quarantine(seal(spool, 0), reason="rejected")

    def unreadable(directory: Path) -> list[object]:
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(spool_module, "_set_aside_items", unreadable)
    with caplog.at_level(logging.WARNING, logger="shipper.spool.spool"):
        target = spool.quarantine(seal(spool, 10), reason="rejected")
    assert target.exists() and spool.entry_count == 0
    assert "cannot prune set-aside spool entries" in caplog.text
