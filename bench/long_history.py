"""Start-up of ``shipper run`` after a long history: time to ready, peak RSS, state size.

For each history size, a fresh logs directory with a few live files is shipped
once by the real daemon (directory sink), then a history of N delivered objects
over N/1000 files that are gone now is added to its state with the daemon's own
code (``tests/support/history.py``; half the files gone for longer than
``checkpoint_grace_secs``). The daemon is started again and measured: seconds
until ``/readyz`` answers 200, its peak RSS (VmHWM) then, and the state
directory's size once the files past the grace are forgotten.

``--legacy`` measures instead the one-time conversion of a state directory of
the first format: a ``ledger.jsonl`` of N lines (one per object) as the previous
release wrote it.

    .venv/bin/python bench/long_history.py --objects 0 100000 1000000
    .venv/bin/python bench/long_history.py --legacy --objects 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from sizes import parse_sized  # noqa: E402

from shipper.batch.segment import Segment  # noqa: E402
from shipper.files.fingerprint import Fingerprint  # noqa: E402
from shipper.state.statedb import read_state, read_totals  # noqa: E402
from tests.support.history import add_history, dir_size  # noqa: E402

LIVE_FILES = 10
LINES_PER_FILE = 100
GRACE_SECS = 7 * 86400.0
OBJECTS_PER_FILE = 1000


def config(root: Path) -> str:
    return (
        f'state_dir = "{root / "state"}"\n'
        "[health]\n"
        'listen = "127.0.0.1:0"\n'
        "[sources.app]\n"
        f'include = ["{root / "logs"}/*.log"]\n'
        "[sink]\n"
        f'type = "directory"\npath = "{root / "shipped"}"\n'
    )


def start(root: Path) -> subprocess.Popen[bytes]:
    log = (root / "shipper.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "shipper", "run", "-c", str(root / "shipper.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )


def health_port(root: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        for line in (root / "shipper.log").read_text().splitlines()[::-1]:
            if '"health endpoint listening"' in line:
                return int(json.loads(line)["port"])
        time.sleep(0.01)
    raise TimeoutError("no health endpoint")


def seconds_to_ready(root: Path, proc: subprocess.Popen[bytes], started: float) -> float:
    deadline = started + 600
    # The log is appended across runs: take the port of this run's line.
    (root / "shipper.log").write_bytes(b"")
    port = health_port(root, deadline)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {(root / 'shipper.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.01)
    raise TimeoutError("not ready")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(str(predicate))
        time.sleep(0.1)


def shipped_all(root: Path) -> bool:
    return read_totals(root / "state").records >= LIVE_FILES * LINES_PER_FILE


@contextlib.contextmanager
def running(root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The daemon, stopped on the way out whatever happened (killed if it hangs)."""
    proc = start(root)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def legacy_ledger(state: Path, objects: int) -> None:
    """``ledger.jsonl`` as the previous release wrote it: a line per delivered object."""
    now = time.time()
    state.mkdir(parents=True, exist_ok=True)
    with (state / "ledger.jsonl").open("wb") as f:
        for n in range(objects):
            file_no, i = divmod(n, OBJECTS_PER_FILE)
            start, end = i * 600, (i + 1) * 600
            segment = Segment(
                _legacy_fingerprint(file_no), f"/var/log/gone/app-{file_no}.log.1", start, end, 1
            )
            seen = now - (GRACE_SECS * 4 if file_no % 2 else GRACE_SECS / 4)
            record = {
                "v": 1,
                "key": f"source=app/host=h/dt=2026-01-01/hour=00/{file_no:016x}-{start}-{end}",
                "source": "app",
                "segments": [segment.to_json()],
                "records": 1,
                "body_sha256": "0" * 64,
                "uncompressed_bytes": 600,
                "outcome": "stored",
                "delivered_at": seen,
                "end_marker": [end, f"{end:016x}"],
            }
            f.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))


def _legacy_fingerprint(file_no: int) -> Fingerprint:
    return Fingerprint(0, (1 << 40) + file_no, 60, f"{file_no:064x}")


def run(objects: int, *, legacy: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="shipper-history-") as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        for n in range(LIVE_FILES):
            with (logs / f"live-{n}.log").open("wb") as f:
                for i in range(LINES_PER_FILE):
                    seq = n * LINES_PER_FILE + i
                    f.write(orjson.dumps({"seq": seq, "message": f"request {seq} handled"}) + b"\n")
        (root / "shipper.toml").write_text(config(root))
        files = max(1, objects // OBJECTS_PER_FILE) if objects else 0
        ledger_bytes = 0
        if legacy:
            legacy_ledger(root / "state", objects)
            ledger_bytes = (root / "state" / "ledger.jsonl").stat().st_size
        else:
            with running(root):
                wait_until(lambda: shipped_all(root), 120)
            if objects:
                add_history(root / "state", objects=objects, files=files, grace_secs=GRACE_SECS)
        before_bytes = dir_size(root / "state")
        started = time.monotonic()
        with running(root) as proc:
            ready = seconds_to_ready(root, proc, started)
            rss = peak_rss_mib(proc.pid)
            # Files past the grace are forgotten at the first pass after the first scan.
            expected = LIVE_FILES + (files + 1) // 2 if files else LIVE_FILES
            wait_until(lambda: len(read_state(root / "state").checkpoints) <= expected, 120)
            wait_until(lambda: shipped_all(root), 120)
        return {
            "objects": objects,
            "gone_files": files,
            "legacy_ledger_bytes": ledger_bytes,
            "state_bytes_before": before_bytes,
            "ready_secs": round(ready, 2),
            "peak_rss_mib": round(rss, 1),
            "state_bytes_after": dir_size(root / "state"),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    parser.add_argument("--legacy", action="store_true")
    args = parse_sized(parser, objects=[0, 20_000])
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "cores": os.cpu_count(),
                "python": sys.version.split()[0],
            }
        )
    )
    for objects in args.objects:
        print(json.dumps(run(objects, legacy=args.legacy)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
