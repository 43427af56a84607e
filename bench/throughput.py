"""End-to-end throughput and memory of ``shipper run`` on seed-style JSON lines.

Writes N lines like the users' guide's JsonFormatter produces into a fresh logs
directory, starts the real daemon on it with the directory sink, and waits until
the ledger accounts for every line. Reports lines/s, MB/s and the daemon's peak
RSS (VmHWM), which covers the whole process.

    .venv/bin/python bench/throughput.py --lines 1000000
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
from datetime import datetime, timedelta
from pathlib import Path

from sizes import parse_sized

from shipper.state.statedb import read_totals

MESSAGES = [
    ("INFO", "User logged in"),
    ("INFO", "Tool selected"),
    ("DEBUG", "Cache lookup"),
    ("WARNING", "Slow response from payment provider"),
    ("ERROR", "Order processing failed"),
]


def write_lines(path: Path, count: int) -> int:
    start = datetime(2026, 11, 25, 9, 0, 0)
    with path.open("w") as out:
        for seq in range(count):
            level, message = MESSAGES[seq % len(MESSAGES)]
            record = {
                "timestamp": (start + timedelta(microseconds=seq * 997)).isoformat() + "Z",
                "level": level,
                "logger": "multi_agent.orchestrator",
                "message": message,
                "module": "orchestrator",
                "function": "handle_request",
                "line": 120 + seq % 50,
                "thread": 140231245,
                "thread_name": "MainThread",
                "process": 4242,
                "request_id": f"req-{seq:08d}",
                "user_id": f"user{seq % 977}",
                "duration_ms": seq % 5000 / 7,
                "seq": seq,
            }
            out.write(json.dumps(record) + "\n")
    return path.stat().st_size


def delivered_records(state_dir: Path) -> int:
    """Records the state database counts delivered (one line, one record, here)."""
    return read_totals(state_dir).records


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-redact", action="store_true", help="run with redact.enabled = false")
    args = parse_sized(parser, lines=100_000)
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        size = write_lines(root / "logs" / "app.log", args.lines)
        config = root / "shipper.toml"
        config.write_text(
            'state_dir = "state"\n[sources.app]\ninclude = ["logs/*.log"]\n'
            '[sink]\ntype = "directory"\npath = "shipped"\n[health]\nlisten = "127.0.0.1:0"\n'
            + ("[redact]\nenabled = false\n" if args.no_redact else "")
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shipper", "run", "-c", str(config), "--log-level", "WARNING"],
            cwd=root,
        )
        peak = 0.0
        try:
            while delivered_records(root / "state") < args.lines:
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited with {proc.returncode}")
                if time.monotonic() - started > args.timeout:
                    raise SystemExit("timed out")
                peak = max(peak, peak_rss_mib(proc.pid))
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            peak = max(peak, peak_rss_mib(proc.pid))
        finally:
            proc.terminate()
            proc.wait(60)
        shipped = sum(f.stat().st_size for f in (root / "shipped").rglob("*.zst"))
    print(
        json.dumps(
            {
                "machine": (
                    f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
                ),
                "lines": args.lines,
                "redaction": not args.no_redact,
                "input_mb": round(size / 1e6, 1),
                "seconds": round(elapsed, 2),
                "lines_per_sec": round(args.lines / elapsed),
                "mb_per_sec": round(size / 1e6 / elapsed, 1),
                "compressed_mb": round(shipped / 1e6, 1),
                "peak_rss_mib": round(peak, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
