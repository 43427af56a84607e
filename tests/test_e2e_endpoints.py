"""The HTTP endpoint of the running daemon: /metrics, /status, ``shipper status``,
stale files and bad requests."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.daemon import run_cli
from tests.support.producers import run_writer
from tests.support.store import assert_exact, wait_for

pytestmark = pytest.mark.e2e


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
        return body


def samples(shipping: Shipping) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, parsed by prometheus_client, by name and labels."""
    text = get(shipping.health_url("/metrics")).decode()
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_once_shipped(shipping: Shipping, records: int) -> Samples:
    """``/metrics`` once it counts ``records`` shipped (the ledger is written first)."""
    return wait_for(
        lambda: (
            (m := samples(shipping))
            and value(m, "shipper_records_total", outcome="shipped") >= records
            and m
        ),
        30,
        message=f"{records} records shipped in /metrics",
    )


def test_metrics_and_status_move_as_lines_are_shipped(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory")
    app = shipping.logs / "app.log"
    run_writer(app, 0, 500)
    with shipping.daemon:
        shipping.wait_delivered(500)
        first = metrics_once_shipped(shipping, 500)
        assert value(first, "shipper_lines_read_total") == 500
        assert value(first, "shipper_bytes_read_total") == app.stat().st_size
        assert value(first, "shipper_records_total", outcome="shipped") == 500
        assert value(first, "shipper_objects_uploaded_total", outcome="stored") >= 1
        assert value(first, "shipper_upload_duration_seconds_count") >= 1
        assert value(first, "shipper_build_info", version="0.1.0") == 1
        assert value(first, "shipper_ready") == 1
        filesystems = [v for (n, _), v in first.items() if n == "shipper_filesystem_used_ratio"]
        assert filesystems and all(0 < v < 1 for v in filesystems)
        assert value(first, "shipper_disk_critical") == 0
        assert value(first, "shipper_last_upload_timestamp_seconds") > time.time() - 120
        run_writer(app, 500, 300)
        shipping.wait_delivered(800)
        second = metrics_once_shipped(shipping, 800)
        assert value(second, "shipper_lines_read_total") == 800
        assert value(second, "shipper_backlog_bytes", source="app") == 0
        status = orjson.loads(get(shipping.health_url("/status")))
        [entry] = [f for f in status["files"] if f["path"] == str(app)]
        assert entry["size"] == entry["checkpoint"] == app.stat().st_size
        assert entry["lag_bytes"] == 0 and entry["stale"] is False
        assert status["readiness"] == {"ready": True, "reasons": []}
        # Nothing of the records' contents.
        assert b"seq" not in get(shipping.health_url("/status"))
        assert b"seq" not in get(shipping.health_url("/metrics"))
        url = shipping.health_url("/status")
        table = run_cli(["status", "--url", url])
        assert table.returncode == 0 and str(app) in table.stdout and "ready: yes" in table.stdout
        as_json = run_cli(["status", "--url", url, "--json"])
        assert orjson.loads(as_json.stdout)["files"][0]["path"] == str(app)
        assert shipping.daemon.terminate() == ExitCode.OK
    assert_exact(shipping.delivered(), range(800))
    nobody = run_cli(["status", "--url", url])
    assert nobody.returncode == ExitCode.RUNTIME_ERROR and "no shipper status" in nobody.stderr


def test_a_file_no_longer_written_is_flagged_stale(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory", source_toml="stale_after_secs = 2\n")
    app = shipping.logs / "app.log"
    run_writer(app, 0, 100)
    with shipping.daemon:
        shipping.wait_delivered(100)
        status = wait_for(
            lambda: (s := orjson.loads(get(shipping.health_url("/status")))) and s["stale"] and s,
            30,
            message="the file flagged stale",
        )
        assert status["stale"] == [str(app)]
        wait_for(lambda: "source file stale" in shipping.daemon.log_text(), 30, message="logged")
        assert value(samples(shipping), "shipper_stale_files", source="app") == 1
        run_writer(app, 100, 10)
        wait_for(
            lambda: not orjson.loads(get(shipping.health_url("/status")))["stale"],
            30,
            message="no longer stale once written",
        )
        shipping.finish(110)


def raw(port: int, data: bytes, *, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_bad_and_slow_requests(tmp_path: Path) -> None:
    shipping = Shipping(tmp_path, "directory")
    with shipping.daemon:
        shipping.wait_started()
        port = int(shipping.health_url("/").rsplit(":", 1)[1].split("/")[0])
        assert raw(port, b"\x16\x03\x01garbage\r\n\r\n").split(b" ", 2)[1] == b"400"
        huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert raw(port, huge).split(b" ", 2)[1] in (b"400", b"431")
        assert raw(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(
            b"HTTP/1.1 404"
        )
        assert raw(
            port, b"DELETE /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ).startswith(b"HTTP/1.1 405")
        # A client that starts a request and never finishes it is dropped.
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert conn.recv(65536) == b""  # closed by the server (a timeout raises)
        print(f"slow client dropped after {time.monotonic() - started:.1f} s")
        assert shipping.daemon.is_running()
        assert shipping.daemon.terminate() == ExitCode.OK
