"""The throughput benchmark still runs: a small size on each sink, no timing asserted."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.support.daemon import PROJECT_ROOT, child_env

pytestmark = pytest.mark.e2e


def run_bench(script: str, *args: str, timeout: float) -> str:
    """``python bench/SCRIPT ARGS`` from the project's root; its standard output."""
    done = subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=PROJECT_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(("sink", "runs"), [("s3", 1), ("directory", 2)])
def test_throughput_bench_reports_every_figure(sink: str, runs: int) -> None:
    args = ["--lines", "3000", "--sink", sink, "--runs", str(runs)]
    report = orjson.loads(run_bench("throughput.py", *args, timeout=170))
    assert report["lines"] == 3000 and report["sink"] == sink
    assert len(report["runs"]) == runs
    for run in report["runs"]:
        assert run["lines_per_sec"] > 0
        assert run["cpu_seconds"] > 0
        assert run["peak_tree_rss_mib"] > 10
    if runs > 1:
        assert set(report["summary"]["lines_per_sec"]) == {"median", "min", "max"}


BENCHES = sorted(
    path.name
    for path in (PROJECT_ROOT / "bench").glob("*.py")
    if path.name not in {"__init__.py", "sizes.py"}
)


@pytest.mark.parametrize("script", BENCHES)
def test_every_bench_script_imports_and_explains_itself(script: str) -> None:
    assert "--quick" in run_bench(script, "--help", timeout=60)
