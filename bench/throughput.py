"""End-to-end throughput, CPU and memory of ``shipper run`` on seed-style JSON lines.

Writes N lines like the users' guide's JsonFormatter produces into a fresh logs
directory (1% carry a ``password`` key, 0.4% a card number and an email in the
message), starts the real daemon on it with the default chain (``host`` added,
redaction on), and times it until the ledger accounts for every line: stored in
SeaweedFS (``--sink s3``, the default: ``weed mini`` on loopback, as the tests
start it) or in a local directory (``--sink directory``).

Reports lines/s, MB/s, CPU seconds summed over the daemon's process tree (user +
system, sampled until the last line), the peak of the tree's summed RSS (sampled
every 0.1 s) and the daemon's own VmHWM. ``--runs N`` repeats the run and adds
the median, min and max of each figure.

    .venv/bin/python bench/throughput.py --lines 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sizes import parse_sized

from shipper.state.statedb import read_totals

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The tests' store starter: weed mini on loopback, ready when data moves.
from tests.support.seaweed import SeaweedServer

MESSAGES = [
    ("INFO", "User logged in"),
    ("INFO", "Tool selected"),
    ("DEBUG", "Cache lookup"),
    ("WARNING", "Slow response from payment provider"),
    ("ERROR", "Order processing failed"),
]
BUCKET = "bench"
SAMPLE_SECS = 0.1


def record(seq: int, start: datetime) -> dict[str, Any]:
    level, message = MESSAGES[seq % len(MESSAGES)]
    if seq % 250 == 7:  # 0.4%: what the seed's "what NOT to log" list warns about
        message = f"charge failed for card 4111 1111 1111 1111, receipt to user{seq}@example.com"
    fields: dict[str, Any] = {
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
    if seq % 100 == 3:  # 1%
        fields["password"] = f"hunter{seq}"
    return fields


def write_lines(path: Path, count: int) -> int:
    start = datetime(2026, 11, 25, 9, 0, 0)
    with path.open("w") as out:
        for seq in range(count):
            out.write(json.dumps(record(seq, start)) + "\n")
    return path.stat().st_size


class TreeSampler:
    """CPU seconds and summed RSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._cpu: dict[int, float] = {}
        self.peak_rss = 0

    def sample(self) -> None:
        rss = 0
        try:
            members = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in members:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue  # a worker that ended keeps its last sampled CPU time
            self._cpu[proc.pid] = times.user + times.system
        self.peak_rss = max(self.peak_rss, rss)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())


def delivered_records(state_dir: Path) -> int:
    """Records the state database counts delivered (one line, one record, here)."""
    return read_totals(state_dir).records


def peak_rss_mib(pid: int) -> float:
    """The peak RSS of one process (its VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def sink_toml(kind: str, root: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The ``[sink]`` table and the daemon's extra environment for ``kind``."""
    if kind == "directory":
        yield '[sink]\ntype = "directory"\npath = "shipped"\n', {}
        return
    server = SeaweedServer(root / "seaweed")
    server.start_on_free_ports()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield (
            f'[sink]\ntype = "s3"\nbucket = "{BUCKET}"\n'
            f'endpoint_url = "{server.endpoint_url}"\nregion = "us-east-1"\n',
            server.env(),
        )
    finally:
        server.close()


def run_once(
    lines: int, sink: str, redact: bool, timeout: float, max_age_secs: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="shipper-bench-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        size = write_lines(root / "logs" / "app.log", lines)
        with sink_toml(sink, root) as (sink_table, env):
            config = root / "shipper.toml"
            config.write_text(
                'state_dir = "state"\n[sources.app]\ninclude = ["logs/*.log"]\n'
                '[health]\nlisten = "127.0.0.1:0"\n'
                f"[batch]\nmax_age_secs = {max_age_secs}\n"
                + ("" if redact else "[redact]\nenabled = false\n")
                + sink_table
            )
            started = time.monotonic()
            command = [sys.executable, "-m", "shipper", "run", "-c", str(config)]
            proc = subprocess.Popen(
                [*command, "--log-level", "WARNING"],
                cwd=root,
                env={**os.environ, **env},
            )
            tree = TreeSampler(proc.pid)
            try:
                next_count = started
                while True:
                    tree.sample()
                    now = time.monotonic()
                    if now >= next_count:  # the ledger is read less often than the tree
                        if delivered_records(root / "state") >= lines:
                            break
                        next_count = now + 0.2
                    if proc.poll() is not None:
                        raise SystemExit(f"daemon exited with {proc.returncode}")
                    if now - started > timeout:
                        raise SystemExit("timed out")
                    time.sleep(SAMPLE_SECS)
                elapsed = time.monotonic() - started
                tree.sample()
                hwm = peak_rss_mib(proc.pid)
            finally:
                proc.terminate()
                proc.wait(60)
    return {
        "seconds": round(elapsed, 2),
        "lines_per_sec": round(lines / elapsed),
        "mb_per_sec": round(size / 1e6 / elapsed, 1),
        "cpu_seconds": round(tree.cpu_seconds, 2),
        "cpu_seconds_per_million_lines": round(tree.cpu_seconds * 1e6 / lines, 2),
        "peak_tree_rss_mib": round(tree.peak_rss / 2**20, 1),
        "daemon_vm_hwm_mib": round(hwm, 1),
        "input_mb": round(size / 1e6, 1),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    figures = [key for key in runs[0] if key != "input_mb"]
    return {
        key: {
            "median": statistics.median(run[key] for run in runs),
            "min": min(run[key] for run in runs),
            "max": max(run[key] for run in runs),
        }
        for key in figures
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--sink", choices=("s3", "directory"), default="s3")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--max-age-secs",
        type=float,
        default=0.5,
        help="batch.max_age_secs: the last, partial batch waits this long once every line"
        " is read (the default 5 s would add up to 5 s to every run)",
    )
    parser.add_argument("--no-redact", action="store_true", help="run with redact.enabled = false")
    args = parse_sized(parser, lines=100_000)
    runs = []
    for _ in range(args.runs):
        run = run_once(args.lines, args.sink, not args.no_redact, args.timeout, args.max_age_secs)
        print(json.dumps(run), file=sys.stderr)
        runs.append(run)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "lines": args.lines,
        "sink": args.sink,
        "redaction": not args.no_redact,
        "batch_max_age_secs": args.max_age_secs,
        "runs": runs,
    }
    if len(runs) > 1:
        report["summary"] = summary(runs)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
