"""Idle CPU of ``shipper run`` watching many quiet files.

Creates N files of a few lines each, starts the real daemon on them (directory
sink), waits until the state database counts every line delivered, then measures the daemon's own
CPU time (user + system, from /proc) over a window in which nothing is written.

    .venv/bin/python bench/idle_cpu.py --files 200 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sizes import parse_sized
from throughput import delivered_records, peak_rss_mib

LINES_PER_FILE = 5


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--settle",
        type=float,
        default=2,
        help="seconds between the last delivery and the window (files close after 60 s idle)",
    )
    args = parse_sized(parser, files=50, seconds=10)
    with tempfile.TemporaryDirectory(prefix="shipper-idle-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        for n in range(args.files):
            with (root / "logs" / f"app{n:04d}.log").open("w") as f:
                for i in range(LINES_PER_FILE):
                    f.write(json.dumps({"file": n, "seq": i, "message": "quiet"}) + "\n")
        (root / "shipper.toml").write_text(
            'state_dir = "state"\n[sources.app]\ninclude = ["logs/*.log"]\n'
            '[sink]\ntype = "directory"\npath = "shipped"\n[health]\nlisten = "127.0.0.1:0"\n'
        )
        command = [sys.executable, "-m", "shipper", "run", "-c", "shipper.toml"]
        proc = subprocess.Popen([*command, "--log-level", "WARNING"], cwd=root)
        try:
            deadline = time.monotonic() + 120
            while delivered_records(root / "state") < args.files * LINES_PER_FILE:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not ship the files")
                time.sleep(0.2)
            time.sleep(args.settle)  # the files are quiet from here on
            before, started = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)  # the measurement window itself
            used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - started
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    print(
        json.dumps(
            {
                "machine": (
                    f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
                ),
                "files": args.files,
                "settle_secs": args.settle,
                "window_secs": round(elapsed, 1),
                "cpu_secs": round(used, 3),
                "cpu_percent_of_one_core": round(100 * used / elapsed, 2),
                "peak_rss_mib": round(rss, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
