"""The real daemon, real files, real writers and a real store: exact multisets of ``seq``."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.exit_codes import ExitCode
from shipper.state.statedb import read_totals
from tests.e2e_harness import Shipping
from tests.support.daemon import PROJECT_ROOT, ShipperProcess, run_cli
from tests.support.producers import run_writer, start_writer, wait_writer
from tests.support.seaweed import SeaweedServer
from tests.support.store import (
    assert_exact,
    decompress,
    dir_seqs,
    parse_ndjson,
    s3_keys,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["directory", "s3"])
def shipping(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shipping]:
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("s3_bucket")
        setting = Shipping(tmp_path, "s3", seaweed=seaweed, bucket=bucket)
    else:
        setting = Shipping(tmp_path, "directory")
    yield setting
    setting.daemon.close()


def test_ships_existing_and_new_lines_exactly_once(shipping: Shipping) -> None:
    app = shipping.logs / "app.log"
    run_writer(app, 0, 3000)
    shipping.daemon.start()
    shipping.wait_started()  # then lines written while it runs
    run_writer(app, 3000, 3000, rate=3000)
    run_writer(shipping.logs / "other.log", 6000, 1000)
    shipping.finish(7000)


def test_sigterm_mid_stream_then_restart(shipping: Shipping) -> None:
    writer = start_writer(shipping.logs / "app.log", 0, 20_000, rate=2000)
    shipping.daemon.start()
    shipping.wait_some_delivered(2000)
    assert shipping.daemon.terminate() == ExitCode.OK
    # A clean stop drains: what was read is delivered, and its spool is empty.
    assert list((shipping.state / "spool").glob("*.entry")) == []
    shipping.daemon.start()
    wait_writer(writer)
    shipping.finish(20_000)


def test_kill9_mid_stream_then_restart(shipping: Shipping) -> None:
    writer = start_writer(shipping.logs / "app.log", 0, 24_000, rate=2000)
    shipping.daemon.start()
    shipping.kill9_while_delivering(rounds=3, every=1000, max_pause=0.7)
    wait_writer(writer)
    shipping.finish(24_000)


def test_rename_rotation_while_running(shipping: Shipping) -> None:
    # logging.handlers.RotatingFileHandler: app.log -> app.log.1 -> ..., a new app.log each
    # time. Only *.log is watched: each rotated file is read to its end from the open handle.
    shipping.daemon.start()
    # A file rotated out of *.log before the first scan was never the daemon's to read.
    shipping.wait_started()
    run_writer(
        shipping.logs / "app.log",
        0,
        6000,
        rate=1000,
        handler="rotating",
        max_bytes=300_000,
        backup_count=50,
    )
    rotated = sorted(p.name for p in shipping.logs.iterdir())
    assert "app.log.3" in rotated, rotated
    assert_exact(shipping.wait_delivered(6000), range(6000))
    # By hand too: rename, then a new file with the same first line is still a new file.
    app = shipping.logs / "app.log"
    app.rename(shipping.logs / "app.log.manual")
    run_writer(app, 6000, 1000)
    shipping.finish(7000)


def test_fast_rotation_with_rotated_siblings_in_the_globs(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    # The recommended set-up: include the rotated names too. A renamed file keeps its
    # identity (inode + first line), so app.log.1 is not shipped again, however fast
    # files rotate, and backups deleted by backupCount are still read to their end.
    shipping = Shipping(
        tmp_path,
        "s3",
        seaweed=seaweed,
        bucket=s3_bucket,
        include="app.log*",
    )
    run_writer(
        shipping.logs / "app.log", 0, 2000, handler="rotating", max_bytes=1_000_000, backup_count=3
    )
    with shipping.daemon:
        # backupCount=3 deletes a file about 2 s after its rotation: the first one must
        # be open by then.
        shipping.wait_started()
        run_writer(
            shipping.logs / "app.log",
            2000,
            20_000,
            rate=5000,
            handler="rotating",
            max_bytes=1_000_000,
            backup_count=3,
        )
        shipping.finish(22_000)


def test_s3_objects_carry_provenance(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, "s3", seaweed=seaweed, bucket=s3_bucket)
    app = shipping.logs / "app.log"
    run_writer(app, 0, 2000)
    with shipping.daemon:
        shipping.wait_delivered(2000)
        assert shipping.daemon.terminate() == ExitCode.OK
    client = seaweed.client()
    keys = s3_keys(client, s3_bucket, "e2e/")
    totals = read_totals(shipping.state)
    assert (totals.stored, totals.already_present, totals.records) == (len(keys), 0, 2000)
    covered = []
    for key in keys:
        obj = client.get_object(Bucket=s3_bucket, Key=key)
        meta = obj["Metadata"]
        body = decompress(obj["Body"].read())
        assert obj["ContentEncoding"] == "zstd"
        assert obj["ContentType"] == "application/x-ndjson"
        assert meta["shipper-sha256"] == hashlib.sha256(body).hexdigest()
        start, end = int(meta["shipper-start"]), int(meta["shipper-end"])
        assert key.endswith(f"{meta['shipper-fingerprint']}-{start:020d}-{end:020d}.ndjson.zst")
        assert "source=app/host=" in key and "/dt=" in key and "/hour=" in key
        records = parse_ndjson(body)
        assert int(meta["shipper-lines"]) == len(records)
        assert all(r["service"] == "e2e" and r["host"] for r in records)
        covered.append((start, end))
    # The objects tile the file: contiguous ranges from 0 to its size, no gap, no overlap.
    covered.sort()
    assert covered[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert covered[-1][1] == app.stat().st_size


def test_example_config_ships_the_bundled_logs(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "config.example.toml", tmp_path / "config.toml")
    shutil.copytree(PROJECT_ROOT / "logs", tmp_path / "logs")
    expected = len((tmp_path / "logs" / "example.log").read_bytes().splitlines())
    assert run_cli(["check-config", "-c", str(tmp_path / "config.toml")]).returncode == 0
    with ShipperProcess(tmp_path / "config.toml", tmp_path) as daemon:
        seqs = wait_for(
            lambda: (seqs := dir_seqs(tmp_path / "shipped")).total() >= expected and seqs,
            60,
            message="the example log shipped",
        )
        assert daemon.terminate() == ExitCode.OK
    assert_exact(seqs, range(expected))
    assert list(
        (tmp_path / "shipped" / "app" / "source=app").glob("host=*/dt=2026-11-25/hour=09/*.zst")
    )


def test_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory")
    run_writer(shipping.logs / "app.log", 0, 10)
    with shipping.daemon:
        shipping.wait_delivered(10)
        second = run_cli(["run", "-c", str(shipping.config)], timeout=60)
        assert second.returncode == ExitCode.RUNTIME_ERROR
        assert "another shipper is running on this state_dir" in second.stderr
        assert shipping.daemon.terminate() == ExitCode.OK
    assert_exact(shipping.delivered(), range(10))


def test_second_signal_forces_the_exit_and_the_spool_keeps_the_rest(
    seaweed: SeaweedServer, s3_bucket: str, tmp_path: Path
) -> None:
    shipping = Shipping(tmp_path, "s3", seaweed=seaweed, bucket=s3_bucket)
    run_writer(shipping.logs / "app.log", 0, 5000)
    seaweed.stop()  # every upload fails, so the drain cannot finish
    try:
        shipping.daemon.start()
        wait_for(
            lambda: list((shipping.state / "spool").glob("*.entry")),
            60,
            message=shipping.daemon.log_tail(),
        )
        shipping.daemon.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping" in shipping.daemon.log_text(), 30)
        shipping.daemon.send_signal(signal.SIGINT)
        assert shipping.daemon.wait(30) == ExitCode.FORCED
    finally:
        seaweed.start()
    shipping.daemon.start()
    shipping.finish(5000)


def test_kill9_before_a_new_files_first_batch_with_read_from_end(tmp_path: Path) -> None:
    # read_from = "end" applies to files never seen; a file the daemon opened and
    # read, but did not seal yet, must not become "never seen" after a crash.
    shipping = Shipping(
        tmp_path, "directory", batch_max_age_secs=3600, source_toml='read_from = "end"'
    )
    run_writer(shipping.logs / "app.log", 0, 100)  # before the first start: skipped
    with shipping.daemon:
        wait_for(lambda: "tailing file" in shipping.daemon.log_text(), 30)
        run_writer(shipping.logs / "app.log", 100, 100)
        run_writer(shipping.logs / "new.log", 200, 100)
        wait_for(lambda: 'new.log","fingerprint"' in shipping.daemon.log_text(), 30)
        shipping.daemon.kill9()
        assert shipping.delivered().total() == 0  # nothing sealed: all still in the files
        shipping.reconfigure(batch_max_age_secs=0.5)
        shipping.daemon.start()
        assert_exact(shipping.wait_delivered(200), range(100, 300))
        assert shipping.daemon.terminate() == ExitCode.OK
    assert_exact(shipping.delivered(), range(100, 300))


def test_second_signal_exits_at_once_while_the_store_hangs(tmp_path: Path) -> None:
    # A "store" that accepts connections and never answers: puts hang for their timeout.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        port = hung.getsockname()[1]
        shipping = Shipping(tmp_path, "directory")
        shipping.config.write_text(
            shipping.config.read_text().split("[sink]")[0]
            + f'[sink]\ntype = "s3"\nbucket = "hung"\nendpoint_url = "http://127.0.0.1:{port}"\n'
        )
        shipping.daemon = ShipperProcess(
            shipping.config,
            tmp_path,
            {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_DEFAULT_REGION": "x"},
        )
        run_writer(shipping.logs / "app.log", 0, 100)
        with shipping.daemon:
            wait_for(lambda: list((shipping.state / "spool").glob("*.entry")), 30)
            shipping.daemon.send_signal(signal.SIGTERM)
            wait_for(lambda: "stopping" in shipping.daemon.log_text(), 30)
            shipping.daemon.send_signal(signal.SIGINT)
            # Far below the 60 s read timeout of the hung put.
            assert shipping.daemon.wait(15) == ExitCode.FORCED
        assert list((shipping.state / "spool").glob("*.entry"))  # kept for the next start
