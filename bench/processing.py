"""Per-stage cost of the record chain, in microseconds per record.

Runs the chain as the daemon builds it over seed-style JSON lines (the same
generator as ``throughput.py``) held in memory, adding one stage at a time:

- ``parse+encode``: parse and NDJSON encoding only;
- ``+enrich``: host, static fields;
- ``+redact``: the default key list and every built-in detector;
- ``+sample``: a rule dropping half of the DEBUG/INFO records by ``request_id``
  and a per-message cap (so sampling also saves the redaction of what it drops).

A stage's cost is its row minus the row above. Also runs the redactor alone
over a line mix where one line in ten holds a secret.

    .venv/bin/python bench/processing.py --records 200000
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sizes import parse_sized

from bench.throughput import write_lines
from shipper.app.chain import build_chain
from shipper.config import parse_config
from shipper.transform.chain import Chain

SAMPLE = {
    "rules": [
        {
            "name": "chatter",
            "rate": 0.5,
            "key_field": "request_id",
            "match": {"level": ["DEBUG", "INFO"]},
        }
    ],
    "cap": {"max_per_sec": 1000},
}


def chain_with(**tables: Any) -> Chain:
    settings = parse_config(
        {
            "sources": {"app": {"include": ["/l/*.log"]}},
            "sink": {"type": "directory", "path": "/s"},
            **tables,
        },
        base_dir=Path("/"),
        environ={},
    )
    return build_chain(
        host="bench",
        environ={},
        parse=settings.parse,
        enrich=settings.enrich,
        redact=settings.redact,
        sample=settings.sample,
    )


def timed(chain: Chain, lines: list[bytes], ends: list[int]) -> float:
    started = time.perf_counter()
    for i in range(0, len(lines), 4096):
        chain.run(lines[i : i + 4096], ends[i : i + 4096], read_time=time.time())
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parse_sized(parser, records=20_000)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.log"
        write_lines(path, args.records)
        lines = path.read_bytes().splitlines()
    ends = list(range(1, len(lines) + 1))
    no_enrich = {"host": False, "kubernetes": False}
    stages = [
        ("parse+encode", chain_with(enrich=no_enrich, redact={"enabled": False})),
        ("+enrich", chain_with(enrich={"fields": {"service": "bench"}}, redact={"enabled": False})),
        ("+redact", chain_with(enrich={"fields": {"service": "bench"}})),
        ("+sample", chain_with(enrich={"fields": {"service": "bench"}}, sample=SAMPLE)),
    ]
    print(f"machine: {platform.machine()}, {platform.python_version()}, records: {len(lines)}")
    for name, chain in stages:
        seconds = min(timed(chain, lines, ends) for _ in range(3))
        per = seconds / len(lines) * 1e6
        print(f"{name:14} {per:6.2f} us/record  {len(lines) / seconds:10,.0f} records/s")
    secrets = [
        b'{"level":"INFO","message":"payment by 4111 1111 1111 1111 for ana@example.com"}',
        b"login password=hunter2 Authorization: Bearer abcdef0123456789abcdef",
    ]
    mixed = [secrets[i % 2] if i % 10 == 0 else line for i, line in enumerate(lines)]
    chain = chain_with(enrich={"fields": {"service": "bench"}})
    seconds = min(timed(chain, mixed, ends) for _ in range(3))
    print(
        f"{'+redact, 10% secrets':14} {seconds / len(lines) * 1e6:6.2f} us/record  "
        f"{len(lines) / seconds:10,.0f} records/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
