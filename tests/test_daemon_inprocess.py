"""The daemon in-process: odd input, start positions, faults injected into its own disk writes."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.app.daemon import Daemon
from shipper.batch.pack import PackedBatch
from shipper.config import MultilineSettings, parse_config
from shipper.exit_codes import ExitCode
from shipper.spool.entry import SpoolEntry
from shipper.state.statedb import read_state, read_totals
from tests.support.store import assert_exact, dir_seqs


def settings_for(
    tmp_path: Path, sink_root: Path, read_from: str = "beginning", **extra: Any
) -> Any:
    return parse_config(
        {
            **extra,
            "state_dir": str(tmp_path / "state"),
            "poll_interval_secs": 0.2,
            "shutdown_timeout_secs": 10,
            "sources": {
                "app": {"include": [str(tmp_path / "logs" / "*.log")], "read_from": read_from}
            },
            "batch": {"max_bytes": "2KiB", "max_age_secs": 0.2},
            "sink": {"type": "directory", "path": str(sink_root)},
            "health": {"listen": "127.0.0.1:0"},
        },
        base_dir=tmp_path,
        environ={},
    )


def write_lines(path: Path, seqs: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        for seq in seqs:
            f.write(orjson.dumps({"seq": seq, "message": "x" * 40}) + b"\n")


async def poll_until(done: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll with a deadline: the daemon offers no event for 'the store has it'."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def run_until(daemon: Daemon, done: Callable[[], object], timeout: float = 30.0) -> ExitCode:
    task = asyncio.create_task(daemon.run())

    def finished() -> object:
        assert not task.done(), f"daemon stopped early: {task}"
        return done()

    await poll_until(finished, timeout)
    daemon.request_stop()
    return await task


def test_failed_spool_writes_are_retried_in_order_without_a_hole(tmp_path: Path) -> None:
    write_lines(tmp_path / "logs" / "app.log", range(2000))
    daemon = Daemon(settings_for(tmp_path, tmp_path / "shipped"))
    real_seal = daemon.spool.seal
    failures = {"left": 5}

    def seal_with_disk_full(batch: PackedBatch) -> SpoolEntry:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_seal(batch)

    daemon.spool.seal = seal_with_disk_full  # type: ignore[method-assign]
    rc = asyncio.run(run_until(daemon, lambda: dir_seqs(tmp_path / "shipped").total() >= 2000))
    assert rc == ExitCode.OK
    assert failures["left"] == 0
    assert_exact(dir_seqs(tmp_path / "shipped"), range(2000))
    # Delivered from byte 0 to the end with no hole, in the state database.
    (shipped,) = read_state(tmp_path / "state").shipped
    assert shipped.ranges == [(0, (tmp_path / "logs" / "app.log").stat().st_size)]


def test_a_failing_store_is_retried_until_it_accepts(tmp_path: Path) -> None:
    write_lines(tmp_path / "logs" / "app.log", range(500))
    blocked = tmp_path / "shipped"
    blocked.write_bytes(b"")  # a file where the sink root should be: every put fails
    daemon = Daemon(settings_for(tmp_path, blocked))

    def unblock_after_failures() -> bool:
        if daemon.uploader is None:  # still recovering
            return False
        if daemon.uploader.counters["retries_retriable"] >= 2 and blocked.is_file():
            blocked.unlink()
        return blocked.is_dir() and dir_seqs(blocked).total() >= 500

    rc = asyncio.run(run_until(daemon, unblock_after_failures))
    assert rc == ExitCode.OK
    assert_exact(dir_seqs(blocked), range(500))


def shipped_records(root: Path) -> list[dict[str, Any]]:
    from tests.support.store import dir_records

    return [record for _, record in dir_records(root)]


def test_odd_lines_are_kept_flagged_never_lost(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(
        b'{"seq": 0, "host": "app-set-this"}\n'
        b'{"seq": 1}\r\n'
        b"plain text seq=2\n"
        b"invalid \xff\xfe utf-8 seq=3\n"
        b"nul \x00 byte seq=4\n"
        b"[5, 6]\n"
        b"\n"
        b'{"seq": 7, "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}\n"
        b'{"seq": 8, "big": 123456789012345678901234567890}\n'
        b'{"seq": 10, "deep": ' + b"[" * 300 + b"]" * 300 + b"}\n"
        b'{"seq": 9, "unterminated": true'
    )
    daemon = Daemon(settings_for(tmp_path, tmp_path / "shipped"))
    rc = asyncio.run(run_until(daemon, lambda: len(shipped_records(tmp_path / "shipped")) >= 9))
    assert rc == ExitCode.OK
    records = shipped_records(tmp_path / "shipped")
    by_message = {str(r.get("message", r.get("seq"))): r for r in records}
    assert len(records) == 10, (
        records
    )  # the unterminated last line of a live file is held, not shipped
    first = next(r for r in records if r.get("seq") == 0)
    assert first["host"] == "app-set-this" and first["shipper_host"]
    assert next(r for r in records if r.get("seq") == 1).get("shipper_flags") is None
    assert by_message["plain text seq=2"]["shipper_flags"] == ["wrapped"]
    assert by_message["invalid \ufffd\ufffd utf-8 seq=3"]["shipper_flags"] == ["invalid_utf8"]
    assert by_message["nul \x00 byte seq=4"]["shipper_flags"] == ["wrapped"]
    assert next(r for r in records if r.get("message") == [5, 6])["shipper_flags"] == ["wrapped"]
    assert by_message[""]["shipper_flags"] == ["wrapped"]
    assert any(str(r.get("message", "")).startswith('{"seq": 7') for r in records)
    # Parsed but too deep for the encoder: shipped as its text, flagged.
    # (as the JSON of the record after redaction, compact)
    too_deep = next(r for r in records if str(r.get("message", "")).startswith('{"seq":10,'))
    assert too_deep["shipper_flags"] == ["unencodable"]
    # Integers beyond 64 bits become doubles, as jq and JavaScript read them.
    assert next(r for r in records if r.get("seq") == 8)["big"] == 1.2345678901234568e29
    # Restarted after the line is finished: it is shipped once, whole.
    with log_file.open("ab") as f:
        f.write(b"}\n")
    daemon = Daemon(settings_for(tmp_path, tmp_path / "shipped"))
    rc = asyncio.run(run_until(daemon, lambda: len(shipped_records(tmp_path / "shipped")) >= 11))
    nine = [r for r in shipped_records(tmp_path / "shipped") if r.get("seq") == 9]
    for record in nine:
        record.pop("kubernetes", None)  # set when the tests run in a pod
    assert nine == [{"seq": 9, "unterminated": True, "host": first["shipper_host"]}]


def test_read_from_end_applies_to_never_seen_files_only(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    write_lines(log_file, range(100))
    with log_file.open("ab") as f:
        f.write(b'{"seq": 100, "half": ')  # a line being written: read whole, later
    shipped = tmp_path / "shipped"
    settings = settings_for(tmp_path, shipped, read_from="end")

    async def first_run() -> ExitCode:
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run())
        await poll_until(lambda: daemon.active)
        with log_file.open("ab") as f:
            f.write(b"1}\n")
        write_lines(log_file, range(101, 150))
        write_lines(tmp_path / "logs" / "new.log", range(150, 160))  # appears while running
        await poll_until(lambda: dir_seqs(shipped).total() >= 60)
        daemon.request_stop()
        return await task

    assert asyncio.run(first_run()) == ExitCode.OK
    assert_exact(dir_seqs(shipped), range(100, 160))
    write_lines(log_file, range(160, 200))  # written while the daemon is down
    daemon = Daemon(settings)
    asyncio.run(run_until(daemon, lambda: dir_seqs(shipped).total() >= 100))
    assert_exact(dir_seqs(shipped), range(100, 200))


def test_copytruncate_reads_the_new_content_from_its_start(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    shipped = tmp_path / "shipped"
    write_lines(log_file, range(100))

    async def scenario() -> ExitCode:
        daemon = Daemon(settings_for(tmp_path, shipped))
        task = asyncio.create_task(daemon.run())
        await poll_until(lambda: dir_seqs(shipped).total() >= 100)
        # What logrotate's copytruncate does: copy, then truncate the same inode.
        (tmp_path / "app.log.1").write_bytes(log_file.read_bytes())
        with log_file.open("r+b") as f:
            f.truncate(0)
        write_lines(log_file, range(100, 130))  # fewer bytes than before: size < offset
        await poll_until(lambda: dir_seqs(shipped).total() >= 130)
        # Truncated and at once rewritten past the old offset: the changed first line tells.
        with log_file.open("r+b") as f:
            f.truncate(0)
        write_lines(log_file, range(1000, 1300))
        await poll_until(lambda: dir_seqs(shipped).total() >= 430)
        daemon.request_stop()
        return await task

    assert asyncio.run(scenario()) == ExitCode.OK
    assert dir_seqs(shipped) == Counter([*range(130), *range(1000, 1300)])


def test_same_first_line_rewrite_is_a_new_generation_read_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_file = tmp_path / "logs" / "app.log"
    shipped = tmp_path / "shipped"
    banner = b"service starting\n"  # the same first line every time the file is rewritten
    log_file.parent.mkdir(parents=True)
    log_file.write_bytes(banner)
    write_lines(log_file, range(100))

    async def scenario() -> ExitCode:
        daemon = Daemon(settings_for(tmp_path, shipped))
        task = asyncio.create_task(daemon.run())
        await poll_until(lambda: len(shipped_records(shipped)) >= 101)
        log_file.write_bytes(banner)  # truncate and rewrite: same head, shorter file
        write_lines(log_file, range(100, 110))
        await poll_until(lambda: len(shipped_records(shipped)) >= 112)
        daemon.request_stop()
        return await task

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(scenario()) == ExitCode.OK
    records = shipped_records(shipped)
    assert_exact(Counter(r["seq"] for r in records if "seq" in r), range(110))
    banners = [r for r in records if r.get("message") == "service starting"]
    assert len(banners) == 2  # once per generation
    rewrites = [r for r in caplog.records if "rewritten in place" in r.getMessage()]
    assert len(rewrites) == 1, "the rewrite is noticed once, not in a loop"


def test_non_utf8_file_names_are_shipped(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    odd_name = os.fsdecode(bytes(logs) + b"/caf\xe9.log")  # Latin-1 name, not UTF-8
    write_lines(Path(odd_name), range(50))
    daemon = Daemon(settings_for(tmp_path, tmp_path / "shipped"))
    rc = asyncio.run(run_until(daemon, lambda: dir_seqs(tmp_path / "shipped").total() >= 50))
    assert rc == ExitCode.OK
    assert_exact(dir_seqs(tmp_path / "shipped"), range(50))
    (shipped,) = read_state(tmp_path / "state").shipped
    assert shipped.path.endswith("caf\\xe9.log")


def test_a_failing_ledger_write_does_not_stop_the_uploads(tmp_path: Path) -> None:
    write_lines(tmp_path / "logs" / "app.log", range(1000))
    daemon = Daemon(settings_for(tmp_path, tmp_path / "shipped"))
    real_append = daemon.ledger.append
    failures = {"left": 6}

    def append_with_disk_full(entry: SpoolEntry, *, outcome: str) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(entry, outcome=outcome)

    daemon.ledger.append = append_with_disk_full  # type: ignore[method-assign]

    def all_recorded() -> bool:
        return read_totals(tmp_path / "state").records >= 1000

    assert asyncio.run(run_until(daemon, all_recorded)) == ExitCode.OK
    assert failures["left"] == 0
    assert_exact(dir_seqs(tmp_path / "shipped"), range(1000))
    assert daemon.uploader is not None
    assert daemon.uploader.counters["retries_local_io"] == 6
    assert daemon.uploader.counters["objects_already_present"] >= 1  # re-put after the failure
    assert list((tmp_path / "state" / "spool").glob("*.entry")) == []


def test_spool_entry_count_bounds_what_is_read_during_an_outage(tmp_path: Path) -> None:
    write_lines(tmp_path / "logs" / "app.log", range(3000))
    blocked = tmp_path / "shipped"
    blocked.write_bytes(b"")  # every put fails until this becomes a directory
    daemon = Daemon(settings_for(tmp_path, blocked, spool={"max_entries": 4}))
    most_entries = 0

    async def scenario() -> ExitCode:
        nonlocal most_entries
        task = asyncio.create_task(daemon.run())
        await poll_until(lambda: daemon.spool.entry_count >= 4)
        for _ in range(20):  # the reader is paused: the count stays at its bound
            most_entries = max(most_entries, daemon.spool.entry_count)
            await asyncio.sleep(0.05)
        blocked.unlink()
        await poll_until(lambda: blocked.is_dir() and dir_seqs(blocked).total() >= 3000)
        daemon.request_stop()
        return await task

    assert asyncio.run(scenario()) == ExitCode.OK
    assert most_entries <= 4 + 1  # one read may seal a batch past the bound
    assert_exact(dir_seqs(blocked), range(3000))


def test_python_tracebacks_are_shipped_as_one_record_each(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    log_file.parent.mkdir(parents=True)
    text = []
    for seq in range(200):
        text.append(f"2026-11-25 10:00:00,{seq:03d} - app - ERROR - failed seq={seq}")
        if seq % 3 == 0:
            text += [
                "Traceback (most recent call last):",
                '  File "app.py", line 3, in <module>',
                f"ValueError: bad value {seq}",
            ]
    log_file.write_text("\n".join(text) + "\n")
    settings = settings_for(tmp_path, tmp_path / "shipped")
    source = dataclasses.replace(
        settings.sources["app"],
        multiline=MultilineSettings(preset="python_traceback", timeout_secs=0.3),
    )
    daemon = Daemon(dataclasses.replace(settings, sources={"app": source}))
    shipped = tmp_path / "shipped"
    rc = asyncio.run(run_until(daemon, lambda: len(shipped_records(shipped)) >= 200))
    assert rc == ExitCode.OK
    records = shipped_records(shipped)
    assert len(records) == 200
    by_seq = {int(str(r["message"]).split("seq=")[1].split("\n")[0]): r for r in records}
    assert sorted(by_seq) == list(range(200))
    assert by_seq[3]["message"].endswith("ValueError: bad value 3")
    assert "\n" not in by_seq[4]["message"]
    # The last record (seq 199) had no successor: the timeout emitted it.
