"""The test store really enforces what delivery relies on; the read-back helpers are right."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.support.producers import WRITER, run_writer
from tests.support.seaweed import SeaweedServer
from tests.support.store import assert_exact, dir_seqs, s3_seqs, wait_for


def _ndjson(seqs: range | list[int]) -> bytes:
    return b"".join(orjson.dumps({"seq": s, "message": f"m{s}"}) + b"\n" for s in seqs)


def _zstd_one_frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _zstd_streamed_frames(*parts: bytes) -> bytes:
    """Several concatenated frames that do not record their content size."""
    out = b""
    for part in parts:
        cobj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
        out += cobj.compress(part) + cobj.flush()
    return out


def _status(err: ClientError) -> int:
    return int(err.response["ResponseMetadata"]["HTTPStatusCode"])


# -- the store ----------------------------------------------------------------------------


def test_if_none_match_star_refuses_a_second_put(seaweed: SeaweedServer, s3_bucket: str) -> None:
    client = seaweed.client()
    key = "source=a/dt=2025-01-01/hour=00/f-0-10.ndjson.zst"
    client.put_object(Bucket=s3_bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert _status(info.value) == 412, info.value.response
    assert client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"first"


def test_wrong_secret_key_is_refused(seaweed: SeaweedServer, s3_bucket: str) -> None:
    bad = seaweed.client(secret_key=seaweed.secret_key + "-wrong", retries={"max_attempts": 1})
    with pytest.raises(ClientError) as info:
        bad.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    assert _status(info.value) == 403
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    listing = seaweed.client().list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0


def test_content_encoding_and_metadata_round_trip(seaweed: SeaweedServer, s3_bucket: str) -> None:
    client = seaweed.client()
    body = _zstd_one_frame(_ndjson(range(3)))
    metadata = {"shipper-records": "3", "shipper-source": "app", "shipper-range": "0-42"}
    client.put_object(
        Bucket=s3_bucket,
        Key="o.ndjson.zst",
        Body=body,
        Metadata=metadata,
        ContentType="application/x-ndjson",
        ContentEncoding="zstd",
    )
    head = client.head_object(Bucket=s3_bucket, Key="o.ndjson.zst")
    assert head["ContentEncoding"] == "zstd"
    assert head["ContentType"] == "application/x-ndjson"
    assert head["Metadata"] == metadata
    assert head["ContentLength"] == len(body)
    # Stored as sent: nobody decodes the zstd on the way back.
    assert client.get_object(Bucket=s3_bucket, Key="o.ndjson.zst")["Body"].read() == body


def test_restart_keeps_objects_ports_and_clients(seaweed: SeaweedServer, s3_bucket: str) -> None:
    client = seaweed.client(retries={"total_max_attempts": 1}, connect_timeout=2)
    client.put_object(Bucket=s3_bucket, Key="before", Body=b"kept", Metadata={"a": "1"})
    endpoint, pid = seaweed.endpoint_url, seaweed.pid

    seaweed.stop()
    assert not seaweed.is_running()
    with pytest.raises(EndpointConnectionError):
        client.head_object(Bucket=s3_bucket, Key="before")

    seaweed.start()
    assert seaweed.endpoint_url == endpoint
    assert seaweed.pid != pid
    # The client made before the outage works again, and the object is intact.
    obj = client.get_object(Bucket=s3_bucket, Key="before")
    assert obj["Body"].read() == b"kept"
    assert obj["Metadata"] == {"a": "1"}
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=s3_bucket, Key="before", Body=b"again", IfNoneMatch="*")
    assert _status(info.value) == 412

    seaweed.restart()
    assert client.get_object(Bucket=s3_bucket, Key="before")["Body"].read() == b"kept"


@pytest.mark.e2e
def test_a_port_taken_before_the_first_start_is_chosen_again(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "weed")
    taken = server.ports["volume.port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            server.start_on_free_ports()
            assert server.ports["volume.port"] != taken
            assert "Port allocation failed" in server.log_path.read_text()
            server.client().list_buckets()
        finally:
            server.close()


def test_env_gives_the_credentials_to_a_subprocess(seaweed: SeaweedServer, s3_bucket: str) -> None:
    code = (
        "import sys, boto3\n"
        "from botocore.config import Config\n"
        "c = boto3.client('s3', endpoint_url=sys.argv[1],"
        " config=Config(s3={'addressing_style': 'path'}))\n"
        "c.put_object(Bucket=sys.argv[2], Key='from-env', Body=b'ok')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(seaweed.data_dir), **seaweed.env()}
    done = subprocess.run(
        [sys.executable, "-c", code, seaweed.endpoint_url, s3_bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    body = seaweed.client().get_object(Bucket=s3_bucket, Key="from-env")["Body"].read()
    assert body == b"ok"


# -- the read-back helpers ------------------------------------------------------------------


def test_s3_seqs_reads_every_delivered_object(seaweed: SeaweedServer, s3_bucket: str) -> None:
    client = seaweed.client()
    put = client.put_object
    put(
        Bucket=s3_bucket,
        Key="p/source=a/x-1.ndjson.zst",
        Body=_zstd_one_frame(_ndjson(range(0, 5))),
    )
    streamed = _zstd_streamed_frames(_ndjson(range(5, 8)), _ndjson([8, 9, 3]))
    put(Bucket=s3_bucket, Key="p/source=b/x-2.ndjson.zst", Body=streamed)
    # Not delivered objects: another suffix, or outside the prefix.
    put(Bucket=s3_bucket, Key="p/source=a/notes.txt", Body=b"not zstd")
    put(Bucket=s3_bucket, Key="other/x-3.ndjson.zst", Body=_zstd_one_frame(_ndjson([100])))

    seqs = s3_seqs(client, s3_bucket, "p/", page_size=1)  # one object per page: paging works
    assert seqs == Counter({**dict.fromkeys(range(10), 1), 3: 2})
    assert s3_seqs(client, s3_bucket) == seqs + Counter({100: 1})
    assert_exact(s3_seqs(client, s3_bucket, "other/"), range(100, 101))


def test_dir_seqs_reads_every_delivered_file(tmp_path: Path) -> None:
    (tmp_path / "source=a" / "dt=2025-01-01").mkdir(parents=True)
    (tmp_path / "source=a" / "dt=2025-01-01" / "f-1.ndjson.zst").write_bytes(
        _zstd_one_frame(_ndjson(range(0, 4)))
    )
    (tmp_path / "f-2.ndjson.zst").write_bytes(_zstd_streamed_frames(_ndjson([4]), _ndjson([5, 0])))
    # Temp files of an unfinished write are not delivered.
    (tmp_path / ".f-3.ndjson.zst").write_bytes(b"half a fr")
    (tmp_path / "source=a" / ".f-4.ndjson.zst.tmp").write_bytes(b"half")
    (tmp_path / "readme.txt").write_text("x")

    assert dir_seqs(tmp_path) == Counter({0: 2, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1})


def test_assert_exact_reports_missing_duplicated_and_unexpected() -> None:
    assert_exact(Counter(range(10)), range(10))
    delivered = Counter([*range(0, 3), *range(6, 10), 7, 7, 42])
    with pytest.raises(AssertionError) as info:
        assert_exact(delivered, range(10))
    text = str(info.value)
    assert "missing:    3 seqs: 3-5" in text
    assert "duplicated: 1 seqs (2 extra copies): 7 x3" in text
    assert "unexpected: 1 seqs: 42 x1" in text
    with pytest.raises(AssertionError, match=r"missing:    0 seqs\n  duplicated: 1 seqs"):
        assert_exact(Counter([*range(5), 4]), range(5))


def test_wait_for_returns_the_value_or_times_out() -> None:
    calls: list[int] = []

    def third_time() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert wait_for(third_time, timeout=5, interval=0.01) == [1, 1, 1]

    def flaky() -> bool:
        raise ConnectionError("down")

    with pytest.raises(AssertionError, match=r"store never came back.*ConnectionError"):
        wait_for(
            flaky,
            timeout=0.2,
            interval=0.05,
            message="store never came back",
            ignore=(ConnectionError,),
        )
    with pytest.raises(ConnectionError):
        wait_for(flaky, timeout=0.2)


# -- the writer -------------------------------------------------------------------------------


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_writer_file_handler_writes_users_json(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    run_writer(log, 10, 200, pad=300)
    run_writer(log, 210, 50, rate=1000)  # appends, paced
    records = _lines(log)
    assert [r["seq"] for r in records] == list(range(10, 260))
    first = records[0]
    assert set(first) == {
        "timestamp", "level", "logger", "message", "module", "function", "line",
        "thread", "thread_name", "process", "seq",
    }  # fmt: skip
    assert isinstance(first["timestamp"], str) and first["timestamp"].endswith("Z")
    assert "+00:00" not in first["timestamp"]
    assert first["module"] == "writer"
    assert len(str(first["message"])) > 300


def test_writer_rotating_handler_rotates(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    run_writer(log, 0, 3000, handler="rotating", max_bytes=64 * 1024, backup_count=50)
    files = sorted(tmp_path.iterdir())
    assert len(files) > 3, files
    seqs = Counter(r["seq"] for f in files for r in _lines(f))
    assert_exact(seqs, range(3000))


def test_writer_refuses_rotating_without_limits(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(WRITER), "--path", str(tmp_path / "a.log"), "--count", "1",
         "--handler", "rotating"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--max-bytes" in done.stderr
