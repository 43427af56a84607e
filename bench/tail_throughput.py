"""Tail-only throughput: read a large seed-style file the way the daemon does, ship nowhere.

Stage by stage, on one file (default 1 GB):
- ``tail``: FileTailer reads 1 MiB chunks and splits them into lines;
- ``tail+chain``: plus parse, enrich, redaction (the defaults) and NDJSON encoding;
- ``tail+chain+batch+zstd``: plus batch cutting and compression (what is sealed),
  into a no-op sink.

    .venv/bin/python bench/tail_throughput.py --gigabytes 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sizes import parse_sized

from bench.throughput import write_lines
from shipper.app.chain import build_chain
from shipper.batch.batcher import Batcher, BatchLimits
from shipper.batch.objectkey import DEFAULT_KEY_TEMPLATE, compile_template
from shipper.batch.pack import pack_batch
from shipper.files.fingerprint import Fingerprint
from shipper.tail.tailer import FileTailer

FP = Fingerprint(dev=0, ino=0, head_len=1, head_sha256="")
KEYS = compile_template(DEFAULT_KEY_TEMPLATE)
MiB = 1 << 20


def tail_only(path: Path, stage: str) -> tuple[int, float]:
    fd = os.open(path, os.O_RDONLY)
    tailer = FileTailer(
        source="app",
        path=str(path),
        fd=fd,
        fingerprint=FP,
        offset=0,
        chunk_bytes=MiB,
        max_line_bytes=MiB,
    )
    chain = build_chain(host="bench", environ={})
    batcher = Batcher(
        BatchLimits(8 * MiB, 100_000, 5.0),
        source="app",
        fingerprint=FP,
        path=str(path),
        position=0,
    )
    sink: Callable[[object], None] = lambda _: None  # noqa: E731 - the no-op sink
    lines = 0
    started = time.perf_counter()
    while (chunk := tailer.read()) is not None:
        lines += len(chunk.lines)
        if stage == "tail":
            continue
        out = chain.run(chunk.lines, chunk.ends, read_time=chunk.read_time)
        if stage == "tail+chain":
            continue
        for batch in batcher.add(out, 0.0):
            sink(pack_batch(batch, keys=KEYS, codec="zstd", compression_level=3))
    elapsed = time.perf_counter() - started
    tailer.close()
    return lines, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parse_sized(parser, gigabytes=0.1)
    with tempfile.TemporaryDirectory(prefix="shipper-tail-bench-") as tmp:
        path = Path(tmp) / "app.log"
        count = int(args.gigabytes * 1e9 / 371)  # seed-style lines are about 371 bytes
        size = write_lines(path, count)
        results = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "file_mb": round(size / 1e6),
            "lines": count,
        }
        for stage in ("tail", "tail+chain", "tail+chain+batch+zstd"):
            lines, elapsed = tail_only(path, stage)
            assert lines == count, (lines, count)
            results[stage] = {
                "seconds": round(elapsed, 2),
                "lines_per_sec": round(lines / elapsed),
                "mb_per_sec": round(size / 1e6 / elapsed, 1),
            }
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
