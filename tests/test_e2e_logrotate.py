"""Debian's real logrotate, run with -f and its own state file while the producer writes."""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import shutil
import subprocess
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.store import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed"),
]

LINES = 15_000
RATE = 3000


def logrotate_once(shipping: Shipping, options: str) -> None:
    """Force one rotation of app.log with ``options``, as cron would run logrotate."""
    app = shipping.logs / "app.log"
    config = shipping.root / "logrotate.conf"
    config.write_text(f"{app} {{\n    rotate 50\n    missingok\n    nomail\n{options}\n}}\n")
    state = shipping.root / "logrotate.state"
    done = subprocess.run(
        ["logrotate", "-f", "-s", str(state), str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    # A writer that reopens its file by itself (WatchedFileHandler) may create app.log
    # again before logrotate does: logrotate then renames it to *.backup, says so as
    # an error, and (with dateext) exits 1; its own create of app.log may then fail
    # with "File exists". The rotation happened all the same.
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    renamed = ["already exists, renaming to" in line for line in errors]
    raced = any(renamed) and all(
        moved or ("error creating output file" in line and "File exists" in line)
        for line, moved in zip(errors, renamed, strict=True)
    )
    assert done.returncode == 0 or (errors and raced), done.stderr


def rotate_while_writing(
    shipping: Shipping,
    options: str,
    handler: str,
    *,
    rotations: int = 3,
    at_bytes: int = 200_000,
    apart_secs: float = 0.0,
) -> None:
    """Write LINES at RATE; force a rotation with ``options`` each time app.log has grown."""
    app = shipping.logs / "app.log"
    shipping.wait_started()
    writer = start_writer(app, 0, LINES, rate=RATE, handler=handler)

    def ready(since: float) -> bool:
        return app.exists() and app.stat().st_size > at_bytes and time.monotonic() > since

    not_before = 0.0
    for n in range(1, rotations + 1):
        # Rotate at a point in the stream, not at a time: when the file holds some lines
        # (and, for date-named rotations, in another second than the last one).
        wait_for(functools.partial(ready, not_before), 30)
        not_before = time.monotonic() + apart_secs
        logrotate_once(shipping, options)
        assert len(list(shipping.logs.iterdir())) > n
    wait_writer(writer)


def seqs_on_disk(logs: Path, pattern: str = "*") -> set[int]:
    """The ``seq`` of every line still in some file of the logs directory."""
    found: set[int] = set()
    for path in logs.glob(pattern):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for line in data.splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and "seq" in record:
                    found.add(record["seq"])
    return found


def test_create(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store, include="*.log")
    with shipping.daemon:
        rotate_while_writing(shipping, "    create", "watched")
        # WatchedFileHandler may create app.log again before logrotate does; logrotate
        # then renames the handler's file to app.log-<date>.backup, which no glob
        # matches (README, known limits). Its lines are shipped only if the daemon had
        # opened that file already: at most once, never required.
        moved = seqs_on_disk(shipping.logs, pattern="*.backup")
        required = set(range(LINES)) - moved
        shipping._wait(
            lambda: required <= set(shipping.delivered()), 120, "every line in a selected file"
        )
        assert shipping.daemon.terminate() == ExitCode.OK
    delivered = shipping.delivered()
    assert max(delivered.values()) == 1, "no line twice"
    assert set(delivered) <= set(range(LINES)), "only lines written"
    missing = sorted(required - set(delivered))
    assert not missing, f"lost lines of selected files: {missing[:20]}"
    print(f"create: {len(moved)} lines in logrotate's .backup files, {len(delivered)} delivered")


def test_dateext(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store, include="app.log*")
    with shipping.daemon:
        # Several rotations a day need a finer date format (here to the second, so the
        # rotations are more than a second apart), or the names collide.
        rotate_while_writing(
            shipping,
            "    create\n    dateext\n    dateformat -%Y%m%d-%H%M%S",
            "watched",
            rotations=2,
            at_bytes=200_000,
            apart_secs=1.1,
        )
        shipping.finish(LINES)


def test_compress_and_delaycompress(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store, include="app.log*")
    with shipping.daemon:
        rotate_while_writing(shipping, "    create\n    compress\n    delaycompress", "watched")
        assert list(shipping.logs.glob("*.gz"))  # older rotations were compressed
        shipping.finish(LINES)


@pytest.mark.parametrize(
    ("include", "options"),
    [
        ("app.log*", "    copytruncate"),
        ("*.log", "    copytruncate"),
        ("app.log*", "    copytruncate\n    compress"),
    ],
    ids=["copy-in-globs", "copy-out", "copy-compressed"],
)
def test_copytruncate_loses_only_lines_in_no_file_and_never_duplicates(
    store: dict[str, Any], tmp_path: Path, include: str, options: str
) -> None:
    # Each copy is recognised by its content as the copy of the file being read (in
    # the globs, or found in the directory after the truncation), and continued where
    # that file was read up to: never shipped anew, and its unread lines not lost.
    shipping = Shipping(tmp_path, **store, include=include)
    with shipping.daemon:
        rotate_while_writing(shipping, options, "file")
        # The last line is in the live file: once it is in, the clean stop drains the rest.
        wait_for(lambda: shipping.delivered()[LINES - 1] >= 1, 60)
        assert shipping.daemon.terminate() == ExitCode.OK
    delivered = shipping.delivered()
    assert max(delivered.values()) == 1, "no line twice"
    lost = sorted(set(range(LINES)) - set(delivered))
    # Only lines written between logrotate's copy and its truncate can be lost: they
    # are in no file (logrotate's own window, ~10 ms per rotation at this rate).
    assert not set(lost) & seqs_on_disk(shipping.logs), "a line still in a file was lost"
    assert len(lost) <= 3 * RATE // 10, f"lost {len(lost)}: {lost[:20]}"
    print(
        f"copytruncate, include {include}, {options.split()}: {LINES} written,"
        f" {len(delivered)} delivered, {len(lost)} lost (in no file), 0 duplicated"
    )


@pytest.mark.parametrize("include", ["app.log*", "*.log"], ids=["copy-in-globs", "copy-out"])
def test_copytruncate_while_stopped_finishes_from_the_copy(
    store: dict[str, Any], tmp_path: Path, include: str
) -> None:
    # Lines written while the daemon is down are only in the copy once logrotate has
    # truncated app.log: the copy is continued where app.log was read up to.
    shipping = Shipping(tmp_path, **store, include=include)
    app = shipping.logs / "app.log"
    shipping.ship_then_stop(app, 1000)
    run_writer(app, 1000, 500)
    logrotate_once(shipping, "    copytruncate")
    assert app.stat().st_size == 0
    run_writer(app, 1500, 500)
    shipping.daemon.start()
    shipping.finish(2000)
    assert "copy of a known file" in shipping.daemon.log_text()


def test_a_copy_found_beside_its_never_seen_original_is_not_shipped_twice(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # copytruncate under way when the daemon starts: app.log is copied to app.log.1,
    # written to again, and not yet truncated. Neither file is known. The copy is
    # held back while app.log is read, then continued where app.log was read up to.
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    run_writer(app, 0, 1000)
    shutil.copyfile(app, shipping.logs / "app.log.1")
    run_writer(app, 1000, 200)
    shipping.daemon.start()
    shipping.wait_started()
    shipping._wait(
        lambda: set(range(1200)) <= set(shipping.delivered()), 60, "lines 0-1199 delivered"
    )
    os.truncate(app, 0)  # copytruncate's truncation, then the writer goes on
    run_writer(app, 1200, 300)
    shipping.finish(1500)
    assert "found a file and its copy" in shipping.daemon.log_text()


def test_compress_while_stopped_finishes_from_the_compressed_file(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # `compress` without `delaycompress`: the half-read app.log becomes app.log.1.gz
    # while the daemon is down. It is finished from the decompressed stream at its
    # checkpoint, and never tailed as text although app.log* matches it.
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    shipping.ship_then_stop(app, 1000)
    run_writer(app, 1000, 2000)
    logrotate_once(shipping, "    create\n    compress")
    assert (shipping.logs / "app.log.1.gz").exists()
    run_writer(app, 3000, 500)
    shipping.daemon.start()
    shipping.finish(3500)
    assert "finishing it from the decompressed stream" in shipping.daemon.log_text()


def test_a_damaged_compressed_file_loses_only_what_cannot_be_read(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    shipping.ship_then_stop(app, 1000)
    run_writer(app, 1000, 20_000)
    logrotate_once(shipping, "    create\n    compress")
    gz = shipping.logs / "app.log.1.gz"
    cut = gz.read_bytes()[: gz.stat().st_size // 2]
    gz.write_bytes(cut)  # cut short, as a full disk would leave it
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    complete = [orjson.loads(line)["seq"] for line in readable.split(b"\n")[:-1]]
    assert 1000 < len(complete) < 21_000
    run_writer(app, 21_000, 500)
    shipping.daemon.start()
    expected = Counter([*range(1000), *complete[1000:], *range(21_000, 21_500)])

    def shipped() -> tuple[Counter[int], list[dict[str, object]]]:
        seqs: Counter[int] = Counter()
        partial = []
        for record in shipping.records():
            if "seq" in record:
                seqs[record["seq"]] += 1
            else:
                partial.append(record)
        return seqs, partial

    wait_for(lambda: shipped()[0].total() >= expected.total(), 60)
    # Said when the file is finished: after rotate_wait_secs at its (early) end.
    wait_for(lambda: "compressed file damaged" in shipping.daemon.log_text(), 30)
    assert shipping.daemon.terminate() == ExitCode.OK
    seqs, partial = shipped()
    assert seqs == expected
    # The line cut by the damage is shipped as far as it goes, flagged.
    assert len(partial) <= 1 and all("partial" in str(r["shipper_flags"]) for r in partial)
    damaged = [
        orjson.loads(line)
        for line in shipping.daemon.log_text().splitlines()
        if "compressed file damaged" in line
    ]
    assert len(damaged) == 1 and damaged[0]["path"].endswith("app.log.1.gz")
    assert damaged[0]["offset"] == len(readable)


def numbered(seqs: range) -> bytes:
    return b"".join(b'{"seq": %d, "msg": "a line of some length to fill"}\n' % s for s in seqs)


def holds_open(shipping: Shipping, path: Path) -> bool:
    """Whether the daemon has ``path`` open."""
    fds = Path(f"/proc/{shipping.daemon.pid}/fd")
    return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())


def test_a_copy_written_slowly_is_held_until_it_can_be_told(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # A big file copied in steps (a slow disk): while the copy is shorter than the
    # original's markers it is neither a new file nor yet known to be a copy.
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    total = 60_000
    app.write_bytes(numbered(range(total)))
    with shipping.daemon:
        shipping.wait_delivered(total)
        data = app.read_bytes()
        with (shipping.logs / "app.log.1").open("wb") as copy:
            for start in range(0, len(data), 256 * 1024):
                copy.write(data[start : start + 256 * 1024])
                copy.flush()
                time.sleep(0.05)  # a slow disk: scans see the copy at many sizes
        app.write_bytes(b"")  # truncate
        with app.open("ab") as out:
            out.write(numbered(range(total, total + 100)))
        shipping.finish(total + 100)


def test_two_copies_while_stopped_continue_once(store: dict[str, Any], tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, **store, include="app.log*")
    app = shipping.logs / "app.log"
    app.write_bytes(numbered(range(5000)))
    shipping.daemon.start()
    shipping.wait_delivered(5000)
    assert shipping.daemon.terminate() == ExitCode.OK
    with app.open("ab") as out:
        out.write(numbered(range(5000, 5100)))  # never read: only in the copies soon
    shutil.copyfile(app, shipping.logs / "app.log.1")
    shutil.copyfile(app, shipping.logs / "app.log.1.bak")
    app.write_bytes(b"")
    shipping.daemon.start()
    shipping.finish(5100)


def test_copytruncate_of_an_idle_file(store: dict[str, Any], tmp_path: Path) -> None:
    # The file was closed as idle (close_inactive_secs) when logrotate copied and
    # truncated it: its unread lines are read from the copy, out of the globs.
    shipping = Shipping(tmp_path, **store, include="*.log", extra_toml="close_inactive_secs = 1")
    app = shipping.logs / "app.log"
    app.write_bytes(numbered(range(5000)))
    with shipping.daemon:
        shipping.wait_delivered(5000)
        wait_for(lambda: not holds_open(shipping, app), 30)
        with app.open("ab") as out:
            out.write(numbered(range(5000, 5100)))
            shutil.copyfile(app, shipping.logs / "app.log.1")
            out.truncate(0)
        shipping.finish(5100)


@pytest.mark.timeout(600)
def test_a_crash_while_finishing_from_a_compressed_file_resumes_in_it(
    store: dict[str, Any], tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, **store, include="*.log")
    app = shipping.logs / "app.log"
    total = 400_000
    app.write_bytes(numbered(range(1000)))
    shipping.daemon.start()
    shipping.wait_delivered(1000)
    assert shipping.daemon.terminate() == ExitCode.OK
    with app.open("ab") as out:
        out.write(numbered(range(1000, total)))
    logrotate_once(shipping, "    create\n    compress")
    shipping.daemon.start()
    # Killed part way through the compressed file: the next start goes on in it.
    wait_for(lambda: "compressed before it was finished" in shipping.daemon.log_text(), 60)
    # Late enough for the checkpoints to have been saved meanwhile.
    wait_for(lambda: shipping.ledger_records() > 80_000, 60)
    shipping.daemon.kill9()
    assert shipping.ledger_records() < total
    shipping.daemon.start()
    shipping.finish(total)


def test_several_files_rotated_and_compressed_inside_one_open_batch(
    store: dict[str, Any], tmp_path: Path
) -> None:
    # One source, three files, their lines in one 3-s window when logrotate renames and
    # compresses all three at once (`compress`, no `delaycompress`; the writers reopen
    # their files themselves, so no `create` race). Only *.log is watched: the rest
    # of each rotated file is read from its open handle or its .gz.
    shipping = Shipping(tmp_path, **store, batch_max_age_secs=3.0)
    names, per_file = ["a", "b", "c"], 4000
    config = shipping.root / "logrotate.conf"
    config.write_text(
        f"{shipping.logs}/*.log {{\n    rotate 50\n    missingok\n    nomail\n    compress\n}}\n"
    )
    state = shipping.root / "logrotate.state"
    with shipping.daemon:
        shipping.wait_started()
        writers = [
            start_writer(
                shipping.logs / f"{name}.log", n * per_file, per_file, rate=1000, handler="watched"
            )
            for n, name in enumerate(names)
        ]

        def grown() -> bool:
            paths = [shipping.logs / f"{name}.log" for name in names]
            return all(p.exists() and p.stat().st_size > 100_000 for p in paths)

        for _ in range(2):
            wait_for(grown, 30)
            done = subprocess.run(
                ["logrotate", "-f", "-s", str(state), str(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        for writer in writers:
            wait_writer(writer)
        assert len(list(shipping.logs.glob("*.gz"))) == 2 * len(names)
        shipping.finish(len(names) * per_file)
