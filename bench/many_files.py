"""``shipper run`` on a watched directory with very many files, a few of them growing.

Three phases, against the real daemon (a subprocess, directory sink) on a fresh
temporary directory:

a. **first pass**: N small files (``--lines-per-file`` JSON lines each, every
   line with a unique ``seq``) exist before the daemon starts. Measured: seconds
   until the state database knows every file (each looked at once: a checkpoint
   per file) and until every line is delivered, the daemon's CPU seconds
   (user + system, /proc/PID/stat) and its peak RSS (VmHWM) over the phase.
b. **growing**: ``--growing`` of the files get ``--grow-rate`` lines/s in all,
   spread evenly over them, for ``--grow-seconds``. Measured: how far delivery
   lags behind the writes, and how long after the last write every line is in.
c. **idle**: nothing written for ``--idle-seconds``. Measured: the daemon's CPU
   over the window (and per ``--idle-slice`` seconds, to show the drop once the
   growing files are closed after ``close_inactive_secs``), its RSS, the state
   database's size (``state.db`` with ``-wal`` and ``-shm``) and its checkpoint count.

Every setting is the daemon's default except those a bench needs (state dir,
one source, the directory sink, an ephemeral health port) and the ones given
on the command line; the settings in effect are reported. Output: JSON lines,
one per phase, the first with the machine, the workload and the settings.

    .venv/bin/python bench/many_files.py --files 100000 --growing 1000 \\
        --lines-per-file 1 --idle-seconds 60

``--profile DIR`` also runs ``py-spy record`` (raw, collapsed stacks) on the
daemon for ``--profile-seconds`` at the start of phase a and of phase c; the
profile files are left in DIR. While it samples, py-spy pauses the daemon a
little (the CPU figures of those phases include that). ``--profile-gil`` keeps
only the samples holding the interpreter lock: where one core is the limit.

The daemon's pid is printed on stderr (with each phase's start), so another
profiler can be pointed at it. A SIGTERM or Ctrl-C stops the daemon and removes
the temporary directory; so does the bench dying (the daemon gets SIGTERM then).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sizes import parse_sized

from shipper.config import Settings, load_config
from shipper.state.statedb import STATE_DB_NAME, read_state, read_totals

#: How often the state is polled (the daemon saves checkpoints every second).
POLL_SECS = 0.5
#: How often a progress sample is kept during phase a.
SAMPLE_SECS = 10.0
PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------ the daemon


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time of ``pid``, all threads (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def cpu_figures(pid: int, before: tuple[float, float], elapsed: float) -> dict[str, float]:
    """CPU used since ``before`` (from :func:`cpu_times`): seconds, system share, % of a core."""
    user, system = (now - then for now, then in zip(cpu_times(pid), before, strict=True))
    return {
        "cpu_secs": round(user + system, 2),
        "cpu_system_secs": round(system, 2),
        "cpu_percent_of_one_core": round(100 * (user + system) / elapsed, 2),
    }


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


def open_files_in(pid: int, directory: Path) -> int:
    """Descriptors of ``pid`` open on files in ``directory`` (the files it tails now)."""
    prefix = str(directory) + os.sep
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix)
    return count


def _die_with_parent() -> None:
    """In the child: SIGTERM when the bench dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def running_daemon(root: Path, log_level: str) -> Iterator[subprocess.Popen[bytes]]:
    """The daemon, stopped (SIGTERM, then SIGKILL after 60 s) however the block ends."""
    log = (root / "shipper.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipper", "run", "-c", "shipper.toml", "--log-level", log_level],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (no threads in the bench yet)
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


# ------------------------------------------------------------------ the state


def known_files(state_dir: Path) -> int:
    """Checkpoints in the state database: the files the daemon has looked at.

    A ``COUNT(*)``, read-only: :func:`read_state` parses every row, which at 100,000
    files would cost the bench (sharing the daemon's cores) about 0.3 s per poll.
    Phase ends check the count with :func:`read_state`.
    """
    path = state_dir / STATE_DB_NAME
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
    except sqlite3.Error:
        return 0  # created a moment ago, no tables yet
    finally:
        db.close()


def delivered(state_dir: Path) -> int:
    return read_totals(state_dir).records


def state_bytes(state_dir: Path) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        path = state_dir / (STATE_DB_NAME + suffix)
        sizes[STATE_DB_NAME + suffix] = path.stat().st_size if path.exists() else 0
    return sizes


def checkpoint_summary(state_dir: Path, sizes: dict[int, int]) -> dict[str, int]:
    """Checkpoints saved, and how many of them are at the end of their file."""
    checkpoints = read_state(state_dir).checkpoints.values()
    at_end = sum(1 for c in checkpoints if sizes.get(c.fingerprint.ino) == c.offset)
    return {"checkpoints": len(checkpoints), "checkpoints_at_file_end": at_end}


# ------------------------------------------------------------------ the files


def line(n: int, seq: int) -> bytes:
    record = {
        "timestamp": f"2026-12-04T09:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1000:03d}Z",
        "level": "INFO",
        "logger": "agent.worker",
        "message": "request handled",
        "file": n,
        "seq": seq,
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def create_files(logs: Path, files: int, lines_per_file: int) -> int:
    seq = 0
    for n in range(files):
        fd = os.open(logs / f"app{n:06d}.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"".join(line(n, seq + i) for i in range(lines_per_file)))
        finally:
            os.close(fd)
        seq += lines_per_file
    return seq


def growing_indices(files: int, growing: int) -> list[int]:
    """``growing`` files spread evenly over the directory (not all at its start)."""
    growing = min(growing, files)
    return sorted({i * files // growing for i in range(growing)})


def file_sizes(logs: Path) -> dict[int, int]:
    """Size of every file, by inode."""
    with os.scandir(logs) as entries:
        return {e.inode(): e.stat().st_size for e in entries}


# ------------------------------------------------------------------ measuring


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def profile(
    pid: int, seconds: float, out: Path | None, *, gil: bool = False
) -> subprocess.Popen[bytes] | None:
    if out is None or seconds <= 0:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    command = [
        str(spy) if spy.exists() else "py-spy",
        "record",
        "-p",
        str(pid),
        "-d",
        str(int(seconds)),
        "-r",
        "50",
        "-f",
        "raw",
        "-t",
        *(["--gil"] if gil else []),
        "-o",
        str(out),
    ]
    say(f"profiling: {' '.join(command)}")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def say(message: str) -> None:
    print(f"[many_files {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def check_alive(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        raise SystemExit(f"the daemon exited with {proc.returncode}")


def first_pass(
    proc: subprocess.Popen[bytes], state: Path, files: int, lines: int, timeout: float
) -> dict[str, Any]:
    """Phase a: until every file is known and every line delivered (or the timeout)."""
    started, times0 = time.monotonic(), cpu_times(proc.pid)
    cpu0 = sum(times0)
    all_known_at = all_delivered_at = None
    samples: list[list[float]] = []
    next_sample = started
    known = shipped = 0
    while time.monotonic() - started < timeout:
        check_alive(proc)
        now = time.monotonic()
        if all_known_at is None:
            known = known_files(state)
            if known >= files:
                all_known_at = now - started
                say(f"every file known after {all_known_at:.1f} s")
        shipped = delivered(state)
        if shipped >= lines and all_delivered_at is None:
            all_delivered_at = now - started
            say(f"every line delivered after {all_delivered_at:.1f} s")
        if now >= next_sample:
            # seconds, files known, lines delivered, daemon CPU seconds so far
            used = cpu_seconds(proc.pid) - cpu0
            samples.append([round(now - started, 1), known, shipped, round(used, 1)])
            next_sample += SAMPLE_SECS
            say(f"t={now - started:.0f}s known={known} delivered={shipped} cpu={used:.1f}s")
        if all_known_at is not None and all_delivered_at is not None:
            break
        time.sleep(POLL_SECS)
    elapsed = time.monotonic() - started
    used = cpu_seconds(proc.pid) - cpu0
    return {
        "phase": "a_first_pass",
        "files": files,
        "lines": lines,
        "timed_out": all_known_at is None or all_delivered_at is None,
        "seconds_until_all_known": _round(all_known_at),
        "seconds_until_all_delivered": _round(all_delivered_at),
        "files_known_at_end": known_files(state),
        "lines_delivered_at_end": delivered(state),
        "objects_stored": read_totals(state).stored,
        "elapsed_secs": round(elapsed, 1),
        **cpu_figures(proc.pid, times0, elapsed),
        "files_per_cpu_sec": round(known_files(state) / used) if used else None,
        "memory_mib": memory_mib(proc.pid),
        "loadavg_at_end": loadavg(),
        "samples[secs,known,delivered,cpu_secs]": samples,
    }


def growing_phase(
    proc: subprocess.Popen[bytes],
    root: Path,
    *,
    indices: list[int],
    rate: float,
    seconds: float,
    seq: int,
    catch_up_timeout: float,
) -> dict[str, Any]:
    """Phase b: ``rate`` lines/s spread over the files at ``indices`` for ``seconds``.

    ``seq`` is the next line's number, and also how many lines were written before.
    """
    logs, state, already = root / "logs", root / "state", seq
    handles = [os.open(logs / f"app{n:06d}.log", os.O_WRONLY | os.O_APPEND) for n in indices]
    tick = 0.1
    written = 0
    max_lag = 0
    started, times0 = time.monotonic(), cpu_times(proc.pid)
    next_poll = started
    try:
        turn = 0
        while (now := time.monotonic()) - started < seconds:
            check_alive(proc)
            due = int(rate * (now - started)) - written  # lines owed by now
            for _ in range(max(0, due)):
                k = turn % len(handles)
                os.write(handles[k], line(indices[k], seq))
                seq += 1
                turn += 1
                written += 1
            if now >= next_poll:
                max_lag = max(max_lag, already + written - delivered(state))
                next_poll += 1.0
            time.sleep(tick)
    finally:
        for fd in handles:
            os.close(fd)
    writing_secs = time.monotonic() - started
    lag_at_stop = already + written - delivered(state)
    stopped = time.monotonic()
    caught_up_after = None
    while time.monotonic() - stopped < catch_up_timeout:
        check_alive(proc)
        if delivered(state) >= already + written:
            caught_up_after = time.monotonic() - stopped
            break
        time.sleep(POLL_SECS / 5)
    elapsed = time.monotonic() - started
    return {
        "phase": "b_growing",
        "growing_files": len(indices),
        "target_lines_per_sec": rate,
        "writing_secs": round(writing_secs, 1),
        "lines_written": written,
        "write_rate": round(written / writing_secs),
        "max_lag_lines_while_writing": max_lag,
        "lag_lines_at_last_write": lag_at_stop,
        "secs_after_last_write_until_all_delivered": _round(caught_up_after, 2),
        **cpu_figures(proc.pid, times0, elapsed),
        "memory_mib": memory_mib(proc.pid),
        "loadavg_at_end": loadavg(),
    }


def idle_phase(
    proc: subprocess.Popen[bytes], logs: Path, state: Path, seconds: float, slice_secs: float
) -> dict[str, Any]:
    """Phase c: nothing written; CPU over the window and per slice."""
    started = last = time.monotonic()
    times0 = cpu_times(proc.pid)
    cpu_last = sum(times0)
    slices: list[float] = []
    while (now := time.monotonic()) - started < seconds:
        check_alive(proc)
        time.sleep(min(slice_secs, seconds - (now - started)))
        now, cpu = time.monotonic(), cpu_seconds(proc.pid)
        slices.append(round(100 * (cpu - cpu_last) / (now - last), 1))
        last, cpu_last = now, cpu
    elapsed = time.monotonic() - started
    return {
        "phase": "c_idle",
        "window_secs": round(elapsed, 1),
        **cpu_figures(proc.pid, times0, elapsed),
        f"cpu_percent_per_{slice_secs:g}s": slices,
        "memory_mib": memory_mib(proc.pid),
        "files_open_by_daemon": open_files_in(proc.pid, logs),
        "threads": len(os.listdir(f"/proc/{proc.pid}/task")),
        "loadavg_at_end": loadavg(),
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def daemon_log_summary(path: Path, top: int = 8) -> dict[str, int]:
    """The daemon's own log lines (WARNING and above by default), by message."""
    messages: Counter[str] = Counter()
    with contextlib.suppress(OSError), path.open(errors="replace") as f:
        for text in f:
            try:
                messages[str(json.loads(text).get("message", text.strip()))] += 1
            except ValueError:
                messages[text.strip()[:120]] += 1
    return dict(messages.most_common(top))


# ------------------------------------------------------------------ main


def config_text(args: argparse.Namespace) -> str:
    root = ['state_dir = "state"']
    for name in ("max_open_files", "close_inactive_secs", "poll_interval_secs"):
        if getattr(args, name) is not None:
            root.append(f"{name} = {getattr(args, name)}")
    if args.no_file_events:
        root.append("file_events = false")
    return (
        "\n".join(root)
        + '\n[sources.app]\ninclude = ["logs/*.log"]\n'
        + '[sink]\ntype = "directory"\npath = "shipped"\n'
        + '[health]\nlisten = "127.0.0.1:0"\n'
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--growing", type=int, default=1_000)
    parser.add_argument("--lines-per-file", type=int, default=1)
    parser.add_argument("--grow-rate", type=float, default=1_000, help="lines/s over all")
    parser.add_argument("--grow-seconds", type=float, default=30)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--idle-slice", type=float, default=10)
    parser.add_argument(
        "--settle", type=float, default=2, help="seconds between phase b's last delivery and c"
    )
    parser.add_argument(
        "--first-pass-timeout",
        type=float,
        default=1800,
        help="phase a gives up (and the bench reports how far it got) after this long",
    )
    parser.add_argument("--catch-up-timeout", type=float, default=300)
    parser.add_argument("--max-open-files", type=int, help="default: the daemon's (512)")
    parser.add_argument("--close-inactive-secs", type=float, help="default: the daemon's (60)")
    parser.add_argument("--poll-interval-secs", type=float, help="default: the daemon's (1)")
    parser.add_argument("--no-file-events", action="store_true", help="file_events = false")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    parser.add_argument("--profile-seconds", type=float, default=30)
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="only samples holding the interpreter lock (where one core is the limit)",
    )
    parser.add_argument("--tmp", type=Path, help="where the temporary directory goes")
    return parse_sized(
        parser, files=2_000, growing=50, grow_seconds=5, idle_seconds=10, idle_slice=5
    )


def header(args: argparse.Namespace, settings: Settings, logs: Path, lines: int) -> dict[str, Any]:
    """The first line: the machine, the workload and the settings in effect."""
    return {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "loadavg_at_start": loadavg(),
        "workload": {
            "files": args.files,
            "lines_per_file": args.lines_per_file,
            "lines": lines,
            "bytes": sum(file_sizes(logs).values()),
            "growing_files": len(growing_indices(args.files, args.growing)),
            "grow_rate_lines_per_sec": args.grow_rate,
            "grow_seconds": args.grow_seconds,
            "idle_seconds": args.idle_seconds,
        },
        "settings": {
            "max_open_files": settings.max_open_files,
            "close_inactive_secs": settings.close_inactive_secs,
            "poll_interval_secs": settings.poll_interval_secs,
            "file_events": settings.file_events,
            "checkpoint_grace_secs": settings.checkpoint_grace_secs,
            "fingerprint_bytes": settings.sources["app"].fingerprint_bytes,
            "batch_max_age_secs": settings.batch.max_age_secs,
            "disk_check_interval_secs": settings.disk.check_interval_secs,
            "redact": settings.redact.enabled,
            "sink": settings.sink.type,
            "log_level": args.log_level,
        },
    }


def run_phases(
    args: argparse.Namespace,
    root: Path,
    proc: subprocess.Popen[bytes],
    lines: int,
    spies: list[subprocess.Popen[bytes]],
) -> int:
    logs, state = root / "logs", root / "state"
    say(f"daemon pid {proc.pid}; phase a (first pass) starts")
    out = None if args.profile is None else args.profile / "phase_a.txt"
    if spy := profile(proc.pid, args.profile_seconds, out, gil=args.profile_gil):
        spies.append(spy)
    phase_a = first_pass(proc, state, args.files, lines, args.first_pass_timeout)
    phase_a.update(checkpoint_summary(state, file_sizes(logs)))
    phase_a["state_bytes"] = state_bytes(state)
    emit(phase_a)
    if phase_a["timed_out"]:
        say("phase a timed out; phases b and c skipped")
        return 1
    indices = growing_indices(args.files, args.growing)
    say(f"phase b (growing: {len(indices)} files) starts")
    emit(
        growing_phase(
            proc,
            root,
            indices=indices,
            rate=args.grow_rate,
            seconds=args.grow_seconds,
            seq=lines,
            catch_up_timeout=args.catch_up_timeout,
        )
    )
    time.sleep(args.settle)
    say(f"phase c (idle, {args.idle_seconds:g} s) starts")
    out = None if args.profile is None else args.profile / "phase_c.txt"
    if spy := profile(
        proc.pid, min(args.profile_seconds, args.idle_seconds), out, gil=args.profile_gil
    ):
        spies.append(spy)
    phase_c = idle_phase(proc, logs, state, args.idle_seconds, args.idle_slice)
    phase_c.update(checkpoint_summary(state, file_sizes(logs)))
    phase_c["state_bytes"] = state_bytes(state)
    phase_c["daemon_log_lines_by_message"] = daemon_log_summary(root / "shipper.log")
    emit(phase_c)
    for spy in spies:  # done with the daemon still running, as a rule
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(args.profile_seconds + 30)
    return 0


def stopped_by_signal(signum: int, _frame: object) -> None:
    say(f"{signal.Signals(signum).name}: stopping the daemon, removing the temporary directory")
    sys.exit(128 + signum)


def main() -> int:
    args = parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    # A SIGTERM ends the bench through the finally blocks: the daemon stops, the
    # temporary directory goes.
    signal.signal(signal.SIGTERM, stopped_by_signal)
    with tempfile.TemporaryDirectory(prefix="shipper-many-", dir=args.tmp) as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        (root / "shipper.toml").write_text(config_text(args))
        settings = load_config(root / "shipper.toml")
        made = time.monotonic()
        lines = create_files(root / "logs", args.files, args.lines_per_file)
        record = header(args, settings, root / "logs", lines)
        record["workload"]["secs_to_create_files"] = round(time.monotonic() - made, 1)
        emit(record)
        spies: list[subprocess.Popen[bytes]] = []
        try:
            with running_daemon(root, args.log_level) as proc:
                return run_phases(args, root, proc, lines, spies)
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait()


if __name__ == "__main__":
    raise SystemExit(main())
