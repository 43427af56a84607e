"""Objects (PUTs) per day, and what they cost, for files written at one line a second.

For each count of files, writes one line a second to every file (the files start
spread over the first second) for a window, with the real daemon running on the
default batch settings and the directory sink, waits until every line is
delivered, and counts the objects and the lines in them. Objects per
day are that count scaled from the window to a day; the cost is S3 Standard's
price of $0.005 per 1,000 PUTs, over 30 days. The reference is batching across
files for 300 s (one object per source every 300 s, however many files feed it).

    .venv/bin/python bench/objects_per_day.py --files 1 10 100 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sizes import parse_sized
from throughput import delivered_records

PUT_DOLLARS = 0.005 / 1000
DAY_SECS = 86400
REFERENCE_WINDOW_SECS = 300


def wait_for_start(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while b'"message":"started"' not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the daemon did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)


def write_lines(logs: Path, files: int, seconds: float) -> int:
    """One line a second to each file; returns how many lines were written."""
    handles = [(logs / f"app{n:04d}.log").open("a", buffering=1) for n in range(files)]
    started, written = time.monotonic(), 0
    try:
        while True:
            for n, handle in enumerate(handles):
                # File n's k-th line is due at k + n / files seconds.
                due = started + written // files + n / files
                if due - started >= seconds:
                    return written
                time.sleep(max(0.0, due - time.monotonic()))
                handle.write(json.dumps({"seq": written, "file": n, "message": "tick"}) + "\n")
                written += 1
    finally:
        for handle in handles:
            handle.close()


def count_shipped(shipped: Path) -> tuple[int, int]:
    """Objects (gap records aside) and the lines in them."""
    objects = lines = 0
    for path in shipped.rglob("*.ndjson.zst"):
        if ".gap." in path.name:
            continue
        objects += 1
        with path.open("rb") as f:
            lines += zstandard.ZstdDecompressor().stream_reader(f).read().count(b"\n")
    return objects, lines


def measure(files: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="shipper-objects-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        (root / "shipper.toml").write_text(
            'state_dir = "state"\n[sources.app]\ninclude = ["logs/*.log"]\n'
            '[sink]\ntype = "directory"\npath = "shipped"\n[health]\nlisten = "127.0.0.1:0"\n'
        )
        log = root / "shipper.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shipper", "run", "-c", "shipper.toml"],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_start(log, proc)
            written = write_lines(root / "logs", files, seconds)
            # Delivered as the daemon runs, not cut short by a stop.
            deadline = time.monotonic() + 60
            while delivered_records(root / "state") < written:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{files} files: not every line was delivered")
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(120)
        objects, lines = count_shipped(root / "shipped")
    if lines != written:
        raise SystemExit(f"{files} files: {written} lines written, {lines} shipped")
    per_day = objects * DAY_SECS / seconds
    reference = DAY_SECS / REFERENCE_WINDOW_SECS
    return {
        "files": files,
        "window_secs": seconds,
        "lines": written,
        "objects": objects,
        "objects_per_day": round(per_day),
        "put_dollars_per_month": round(per_day * 30 * PUT_DOLLARS, 2),
        "reference_300s_objects_per_day": round(reference),
        "reference_300s_put_dollars_per_month": round(reference * 30 * PUT_DOLLARS, 2),
        "objects_per_window_of_5s": round(objects / math.ceil(seconds / 5), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seconds", type=float, default=60)
    args = parse_sized(parser, seconds=15)
    results = [measure(files, args.seconds) for files in args.files]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    print(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
