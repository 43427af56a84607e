"""Rotation styles, downtime, deletion and odd files: the real daemon, exact multisets."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_state, read_totals
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.seaweed import SeaweedServer
from tests.support.store import wait_for

pytestmark = pytest.mark.e2e


def test_timed_rotating_handler(store: dict[str, Any], tmp_path: Path) -> None:
    # TimedRotatingFileHandler(when="S"): app.log -> app.log.2026-11-25_13-00-01 every second.
    shipping = Shipping(tmp_path, **store, include="app.log*")
    with shipping.daemon:
        shipping.wait_started()  # its first scan sees the first file
        run_writer(shipping.logs / "app.log", 0, 12_000, rate=3000, handler="timed", backup_count=2)
        assert len(list(shipping.logs.iterdir())) >= 3  # it did rotate
        shipping.finish(12_000)


def test_two_rotations_while_stopped(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    shipping.ship_then_stop(app, 1000)
    run_writer(app, 1000, 500)  # unread when it is rotated
    app.rename(shipping.logs / "app.log.1")
    run_writer(app, 1500, 500)  # a file the daemon never saw
    (shipping.logs / "app.log.1").rename(shipping.logs / "app.log.2")
    app.rename(shipping.logs / "app.log.1")
    run_writer(app, 2000, 500)
    shipping.daemon.start()
    shipping.finish(2500)


def test_rotation_out_of_the_globs_while_stopped(store: dict[str, Any], tmp_path: Path) -> None:
    # Only *.log is watched. The half-read file renamed to app.log.1 while the daemon
    # was down is found again by device and inode, and finished.
    shipping = Shipping(tmp_path, **store, include="*.log")
    app = shipping.logs / "app.log"
    shipping.ship_then_stop(app, 1000, kill=True)
    run_writer(app, 1000, 700)
    app.rename(shipping.logs / "app.log.1")
    run_writer(app, 1700, 300)
    shipping.daemon.start()
    shipping.finish(2000)
    assert "found a rotated file with unread lines" in shipping.daemon.log_text()


def test_rewrite_with_the_same_first_bytes_while_stopped(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # Truncated and written again, longer than before, starting with the same bytes
    # (the fingerprint covers the first 16): the head and the size both say "the same
    # file"; the bytes before the saved offset say otherwise, so it is read from its
    # start as a new generation, never seeked into.
    shipping = Shipping(tmp_path, **store, source_toml="fingerprint_bytes = 16")
    app = shipping.logs / "app.log"

    def lines(seqs: range) -> bytes:
        return b"".join(b'{"message": "same start", "seq": %d}\n' % seq for seq in seqs)

    app.write_bytes(lines(range(1000)))
    shipping.daemon.start()
    shipping.wait_delivered(1000)
    assert shipping.daemon.terminate() == ExitCode.OK
    inode = app.stat().st_ino
    app.write_bytes(lines(range(1000, 4000)))  # O_TRUNC: the same inode
    assert app.stat().st_ino == inode
    shipping.daemon.start()
    shipping.finish(4000)
    assert "rewritten in place" in shipping.daemon.log_text()


def test_delete_while_open(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store)
    with shipping.daemon:
        shipping.wait_started()  # its first scan sees the first file
        # The writer deletes its file after 2,000 lines and writes 3,000 more into it.
        run_writer(shipping.logs / "app.log", 0, 5000, rate=5000, unlink_after=2000)
        assert not (shipping.logs / "app.log").exists()
        shipping.finish(5000)


def test_inode_reuse_is_a_new_file(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store)
    app = shipping.logs / "app.log"
    with shipping.daemon:
        shipping.wait_started()  # its first scan sees the first file
        run_writer(app, 0, 1000)
        shipping.wait_delivered(1000)
        old_inode = app.stat().st_ino
        # Moved out of the logs directory (so out of the globs), the file is finished
        # and closed. Its inode then comes back holding another file, as when the
        # filesystem hands a freed inode to a new one. Waiting for ext4 to do that
        # itself is not reliable: other processes (parallel tests, the store) take it.
        aside = tmp_path / "aside"
        app.rename(aside)
        wait_for(lambda: "finished rotated file" in shipping.daemon.log_text(), 30)
        aside.write_bytes(b"")  # emptied in place: the same inode
        aside.rename(app)
        assert app.stat().st_ino == old_inode
        # Fewer bytes than the old checkpoint, and a different first line: a new file.
        run_writer(app, 1000, 300)
        shipping.finish(1300)


def test_odd_files_a_50_mb_line_and_no_trailing_newline(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store, include="*.log")
    app = shipping.logs / "app.log"
    with app.open("wb") as f:
        f.write(b'{"seq": 0}\n')
        f.write(b'{"seq": 1, "blob": "' + b"a" * (50 << 20) + b'"}\n')
        f.write(b'{"seq": 2}\r\n')
        f.write(b'{"seq": 3, "bad": "\xff\xfe"}\n')
        f.write(b'{"seq": 4, "nul": "\x00"}\n')
    odd = shipping.logs / "no-newline.log"
    odd.write_bytes(b'{"seq": 5}\n{"seq": 6}')
    with shipping.daemon:
        wait_records(shipping, 6)
        odd.rename(shipping.logs / "no-newline.old")  # rotated away: its last line is final
        records = wait_records(shipping, 7)
        assert shipping.daemon.terminate() == ExitCode.OK
    by_seq = {}
    for record in records:
        text = record.get("message", "")
        seq = record.get("seq")
        if seq is None and isinstance(text, str) and text.startswith('{"seq": '):
            seq = int(text[8 : text.index(",") if "," in text[:12] else text.index("}")])
        by_seq[seq] = record
    assert sorted(by_seq) == list(range(7)), sorted(by_seq)
    assert by_seq[1]["shipper_flags"] == ["wrapped", "truncated"]
    assert len(by_seq[1]["message"]) == 1 << 20
    # A JSON object with invalid UTF-8 is still a record, with replacement characters.
    assert by_seq[3]["shipper_flags"] == ["invalid_utf8", "nonstandard_json"]
    assert by_seq[3]["bad"] == "\ufffd\ufffd"
    assert by_seq[6]["shipper_flags"] == ["partial"]
    assert "shipper_flags" not in by_seq[2]  # CRLF is a line ending, not data
    # A raw NUL inside a JSON string is not JSON: the line is kept whole, as text.
    assert by_seq[4]["shipper_flags"] == ["wrapped"]
    assert by_seq[4]["message"] == '{"seq": 4, "nul": "\x00"}'


def wait_records(shipping: Shipping, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    while True:
        records = shipping.records()
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_polling_only(store: dict[str, Any], tmp_path: Path) -> None:
    # Without events only the rescan finds files: the rotated names are in the globs too.
    shipping = Shipping(tmp_path, **store, include="*.log*", extra_toml="file_events = false")
    with shipping.daemon:
        shipping.wait_started()  # its first scan sees the first file
        run_writer(shipping.logs / "app.log", 0, 3000, rate=3000)
        run_writer(
            shipping.logs / "rot.log",
            3000,
            3000,
            handler="rotating",
            max_bytes=200_000,
            backup_count=20,
        )
        shipping.finish(6000)


@pytest.mark.timeout(600)
def test_kill9_crash_loop_under_rotation(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    rng = random.Random()
    shipping = Shipping(tmp_path, "s3", seaweed=seaweed, bucket=s3_bucket, include="app.log*")
    writer = start_writer(
        shipping.logs / "app.log",
        0,
        60_000,
        rate=3000,
        handler="rotating",
        max_bytes=1_000_000,
        backup_count=20,
    )
    shipping.daemon.start()
    for _ in range(20):
        time.sleep(rng.uniform(0.2, 1.0))  # a random moment, not a synchronisation point
        shipping.daemon.kill9()
        shipping.daemon.start()
    wait_writer(writer)
    shipping.finish(60_000)


def ship_from_a_rotating_handler(
    shipping: Shipping, lines: int, *, rate: int, max_bytes: int, backup_count: int
) -> None:
    """A RotatingFileHandler writes ``lines`` at ``rate`` lines/s into ``app.log``;
    every line must arrive exactly once."""
    with shipping.daemon:
        # Files deleted before the daemon runs cannot be shipped by anyone: start writing
        # once it is up.
        shipping.wait_started()
        run_writer(
            shipping.logs / "app.log",
            0,
            lines,
            rate=rate,
            handler="rotating",
            max_bytes=max_bytes,
            backup_count=backup_count,
        )
        shipping.finish(lines)


@pytest.mark.timeout(600)
def test_tiny_rotating_handler_at_5000_lines_per_second(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    # RotatingFileHandler, maxBytes 100 kB, backupCount=3: a new file about every 0.07 s,
    # deleted about 0.27 s after it was created. Each is opened as its creation is seen.
    ship_from_a_rotating_handler(
        Shipping(tmp_path, "s3", seaweed=seaweed, bucket=s3_bucket, include="app.log*"),
        100_000,
        rate=5000,
        max_bytes=100_000,
        backup_count=3,
    )


def test_files_created_during_a_scan_are_read_by_one_reader(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    # A new file about every 0.025 s: many are created while a scan is opening others,
    # so their creation events pre-open them too, and the next scan takes those
    # handles. Each file must still be read by one reader only: two would each ship
    # it, under the same keys (the store's 412 hides it) or, cut otherwise, twice.
    # Twenty backups keep each file about 0.5 s: long enough, on a busy machine, for
    # the daemon to open it before it is deleted (lines deleted unread are lost to all).
    shipping = Shipping(tmp_path, "s3", seaweed=seaweed, bucket=s3_bucket, include="app.log*")
    ship_from_a_rotating_handler(shipping, 60_000, rate=6000, max_bytes=30_000, backup_count=20)
    # Nothing was sealed twice: no upload found its object already there (412).
    totals = read_totals(shipping.state)
    assert totals.already_present == 0, totals
    assert totals.records == 60_000, totals


@pytest.mark.timeout(600)
def test_a_thousand_files_two_hundred_active_with_bounded_descriptors(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(
        tmp_path,
        **store,
        extra_toml="max_open_files = 64\nclose_inactive_secs = 1",
    )
    files = [shipping.logs / f"svc-{i:04d}.log" for i in range(1000)]
    seq = 0
    for path in files:  # every file starts with five lines
        with path.open("w") as f:
            for _ in range(5):
                f.write(f'{{"seq": {seq}}}\n')
                seq += 1
    most_fds = 0
    with shipping.daemon:
        fd_dir = Path(f"/proc/{shipping.daemon.pid}/fd")
        for round_ in range(25):  # then 200 of them keep growing, a line each per round
            for path in files[::5]:
                with path.open("a") as f:
                    f.write(f'{{"seq": {seq}}}\n')
                seq += 1
            most_fds = max(most_fds, len(list(fd_dir.iterdir())))
            time.sleep(0.1 if round_ % 5 else 1.2)  # now and then long enough to park
        shipping.finish(seq)
    # 64 log files, plus the interpreter, the spool, the ledger, sockets and the watcher.
    print(f"most descriptors open: {most_fds}")
    assert most_fds <= 64 + 40, most_fds
    assert seq == 10_000


@pytest.mark.timeout(600)
def test_files_waiting_for_a_slot_are_followed_when_rotated(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # One slot; a long backlog in a.log keeps it busy while the others wait: b.log,
    # known and with unread lines, and d.log, new. Both are rotated out of the globs
    # while they wait.
    shipping = Shipping(tmp_path, **store, extra_toml="max_open_files = 1")
    logs = shipping.logs

    def append(name: str, seqs: range) -> None:
        with (logs / name).open("ab") as out:
            out.write(b"".join(b'{"seq": %d, "msg": "waiting for a slot"}\n' % n for n in seqs))

    for n, name in enumerate(["a.log", "b.log", "c.log"]):
        append(name, range(10 * n, 10 * n + 10))
    shipping.daemon.start()
    shipping.wait_delivered(30)
    assert shipping.daemon.terminate() == ExitCode.OK
    backlog = 400_000
    append("a.log", range(30, 30 + backlog))
    append("b.log", range(backlog + 30, backlog + 40))
    append("c.log", range(backlog + 40, backlog + 50))
    shipping.daemon.start()
    shipping.wait_started()
    (logs / "b.log").rename(logs / "b.log.1")
    append("b.log", range(backlog + 50, backlog + 55))
    append("d.log", range(backlog + 55, backlog + 75))
    # Seen waiting, and so known from its start.
    wait_for(
        lambda: any(
            c.path.endswith("/d.log") for c in read_state(shipping.state).checkpoints.values()
        ),
        30,
    )
    assert shipping.ledger_records() < backlog, "a.log still holds the slot"
    (logs / "d.log").rename(logs / "d.log.1")
    append("d.log", range(backlog + 75, backlog + 80))
    shipping.finish(backlog + 80)


def test_kubernetes_style_symlinks(store: dict[str, Any], tmp_path: Path) -> None:
    # /var/log/containers/<pod>_<ns>_<container>-<id>.log -> /var/log/pods/.../0.log;
    # the kubelet rotates 0.log to 0.log.<timestamp> and starts a new 0.log.
    pods = tmp_path / "pods"
    shipping = Shipping(
        tmp_path, **store, include="*.log", source_toml=f'symlink_targets = ["{pods}"]\n'
    )
    pod_dir = pods / "ns_app-1_uid" / "app"
    pod_dir.mkdir(parents=True)
    current = pod_dir / "0.log"
    (shipping.logs / "app-1_ns_app-0123.log").symlink_to(current)
    with shipping.daemon:
        shipping.wait_started()  # its first scan sees the first file
        run_writer(current, 0, 2000, rate=4000)
        current.rename(pod_dir / "0.log.20261125-101500")
        run_writer(current, 2000, 2000, rate=4000)
        shipping.finish(4000)
