"""Redaction and sampling end to end: the real daemon, real files, SeaweedFS.

Secrets of every kind go into a log file; afterwards no byte of the store, of
the state directory (spool entries decompressed) or of the daemon's own log
holds one. Sampled lines are delivered as an exact, predictable multiset.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import zstandard

from shipper.exit_codes import ExitCode
from tests.e2e_harness import Shipping
from tests.support.store import assert_exact, wait_for

PEM_EVERY = 50
PEM_BODY_LINES = 3
_SEQ_RE = re.compile(r"^seq=(\d+) ")


def luhn_complete(partial: str) -> str:
    """``partial`` plus the check digit that makes it pass Luhn."""
    total = 0
    for index, char in enumerate(reversed(partial)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return partial + str((10 - total % 10) % 10)


def secrets_of(seq: int) -> dict[str, str]:
    """Distinct secrets of every kind for line ``seq``."""
    digest = hashlib.sha256(b"seq%d" % seq).hexdigest()
    b64 = base64.b64encode(hashlib.sha256(b"aws%d" % seq).digest() * 2).decode()
    card = luhn_complete(f"4{seq:014d}")
    jwt_payload = base64.urlsafe_b64encode(b'{"sub":"user-%d"}' % seq).decode().rstrip("=")
    return {
        "card": card,
        "email": f"user{seq}.x@corp{seq}.example.com",
        "ssn": f"{100 + seq % 500:03d}-{10 + seq % 80:02d}-{1000 + seq:04d}",
        "jwt": f"eyJhbGciOiJIUzI1NiJ9.{jwt_payload}.{digest[:43]}",
        "aws_key_id": "AKIA" + digest[:16].upper().replace("0", "Z"),
        "aws_secret": b64.replace("=", "")[:40],
        "bearer": f"tok{digest[:32]}",
        "basic": base64.b64encode(b"user%d:pw%dxyz" % (seq, seq)).decode(),
        "url_password": f"pw{seq}urlsecret",
        "pair_password": f"pw{seq}Hunter",
        "key_value": f"keyvalue-{digest[:24]}",
    }


def card_formats(card: str) -> list[str]:
    groups = [card[i : i + 4] for i in range(0, 16, 4)]
    return [card, " ".join(groups), "-".join(groups)]


def line_of(seq: int) -> list[bytes]:
    s = secrets_of(seq)
    card = card_formats(s["card"])[seq % 3]
    if seq % PEM_EVERY == 0:
        body = [
            base64.b64encode(hashlib.sha512(b"pem%d-%d" % (seq, i)).digest()).decode()
            for i in range(PEM_BODY_LINES)
        ]
        return [
            f"seq={seq} loading key -----BEGIN RSA PRIVATE KEY-----".encode(),
            *(line.encode() for line in body),
            b"-----END RSA PRIVATE KEY-----",
        ]
    if seq % 2:
        return [
            (
                f"seq={seq} login {s['email']} card {card} ssn {s['ssn']} jwt {s['jwt']} "
                f"key {s['aws_key_id']} aws_secret_access_key={s['aws_secret']} "
                f"Authorization: Basic {s['basic']} "
                f"url postgres://admin:{s['url_password']}@db.internal:5432/x "
                f"password={s['pair_password']}"
            ).encode()
        ]
    import orjson

    record: dict[str, Any] = {
        "seq": seq,
        "level": "INFO",
        "message": f"payment by {card} for {s['email']}",
        "user": {"ssn": s["ssn"], "apiKey": s["key_value"], "tags": [s["jwt"]]},
        "card_as_number": int(s["card"]),
        "headers": {"X-Auth": f"Bearer {s['bearer']}"},
        "aws_secret_access_key": s["aws_secret"],
        "note": f"retry with password={s['pair_password']} and key {s['aws_key_id']}",
    }
    return [orjson.dumps(record)]


def forbidden_of(seq: int) -> list[bytes]:
    """Every spelling of line ``seq``'s secrets that must not appear anywhere."""
    s = secrets_of(seq)
    found = [*card_formats(s["card"]), *(v for k, v in s.items() if k != "card")]
    if seq % PEM_EVERY == 0:
        found = [
            base64.b64encode(hashlib.sha512(b"pem%d-%d" % (seq, i)).digest()).decode()[:40]
            for i in range(PEM_BODY_LINES)
        ]
    return [f.encode() for f in found]


def decompressed_frames(data: bytes) -> list[bytes]:
    """The content of every zstd frame inside ``data`` (spool entries embed one)."""
    found = []
    start = data.find(b"\x28\xb5\x2f\xfd")
    while start != -1:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data[start:]))
        with contextlib.suppress(zstandard.ZstdError):  # the magic bytes by chance
            found.append(reader.read(1 << 30))
        start = data.find(b"\x28\xb5\x2f\xfd", start + 1)
    return found


def assert_no_secret(blobs: dict[str, bytes], seqs: range) -> None:
    """No secret of any line, in any spelling, in any blob or its decompressed frames."""
    expanded: dict[str, bytes] = {}
    for name, data in blobs.items():
        expanded[name] = data
        for index, frame in enumerate(decompressed_frames(data)):
            expanded[f"{name} (zstd frame {index})"] = frame
    assert any(b"[REDACTED:" in data for data in expanded.values())  # the search sees records
    lowered = {name: data.lower() for name, data in expanded.items()}
    for seq in seqs:
        for secret in forbidden_of(seq):
            for name, data in lowered.items():
                assert secret.lower() not in data, f"line {seq}: {secret!r} found in {name}"


def delivered_seqs(records: list[dict[str, Any]]) -> tuple[Counter[int], Counter[str]]:
    """Seqs of JSON records and of plain-text ``seq=N`` lines; the rest by message."""
    seqs: Counter[int] = Counter()
    others: Counter[str] = Counter()
    for record in records:
        if "seq" in record:
            seqs[record["seq"]] += 1
        elif (match := _SEQ_RE.match(str(record.get("message", "")))) is not None:
            seqs[int(match.group(1))] += 1
        else:
            others[str(record.get("message"))] += 1
    return seqs, others


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(600)
def test_secrets_never_reach_the_store_the_spool_or_the_daemon_log(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    shipping = Shipping(tmp_path, **store, batch_max_bytes="16KiB")
    seaweed = store["seaweed"]
    total = 3000
    app = shipping.logs / "app.log"
    with app.open("wb") as f:
        for seq in range(total):
            f.write(b"".join(line + b"\n" for line in line_of(seq)))
    pem_lines = (total // PEM_EVERY) * (PEM_BODY_LINES + 1)
    # The store is down: everything read waits in the spool, where it is checked too.
    seaweed.stop()
    try:
        with shipping.daemon:
            spool = shipping.state / "spool"
            wait_for(
                lambda: sum(1 for _ in spool.glob("*.entry")) >= 5,
                60,
                interval=0.2,
                message="spool entries while the store is down",
            )
            shipping.daemon.kill9()
    finally:
        seaweed.start()
    spooled = files_under(shipping.state)
    assert any(name.endswith(".entry") for name in spooled)
    assert_no_secret(spooled, range(total))
    with shipping.daemon:
        wait_for(
            lambda: len(shipping.records()) >= total + pem_lines,
            120,
            interval=0.5,
            message="every line delivered",
        )
        assert shipping.daemon.terminate() == ExitCode.OK
    records = shipping.records()
    seqs, others = delivered_seqs(records)
    assert_exact(seqs, range(total))
    assert others == Counter({"[REDACTED:private_key]": pem_lines})
    client = seaweed.client()
    objects = {
        key: client.get_object(Bucket=store["bucket"], Key=key)["Body"].read()
        for key in (o["Key"] for o in client.list_objects_v2(Bucket=store["bucket"])["Contents"])
    }
    blobs = {**objects, **files_under(shipping.state)}
    blobs["daemon log"] = shipping.daemon.log_path.read_bytes()
    assert_no_secret(blobs, range(total))
    # Each kind was caught by its own detector, not by accident.
    odd = next(r for r in records if r.get("message", "").startswith("seq=1 "))
    for label in (
        "email",
        "credit_card",
        "us_ssn",
        "jwt",
        "aws_access_key_id",
        "aws_secret_access_key",
        "basic_auth",
        "url_credentials",
        "secret_pair",
    ):
        assert f"[REDACTED:{label}]" in odd["message"], label
    even = next(r for r in records if r.get("seq") == 2)
    assert even["user"]["apiKey"] == "[REDACTED]"
    assert even["card_as_number"] == "[REDACTED:credit_card]"
    assert even["headers"]["X-Auth"] == "Bearer [REDACTED:bearer]"


def fraction(data: bytes) -> float:
    """The documented sampling hash: BLAKE2b-64 of the key, big-endian, over 2**64."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") / 2**64


SAMPLING_TOML = """
[[sample.rules]]
name = "chatter"
rate = 0.25
match = { logger = "chatter" }
key_field = "trace_id"
"""


def test_sampling_keeps_a_predictable_exact_multiset_across_a_kill(
    tmp_path: Path, store: dict[str, Any]
) -> None:
    import orjson

    from tests.support.store import s3_keys

    shipping = Shipping(tmp_path, **store, extra_toml=SAMPLING_TOML, batch_max_bytes="8KiB")
    total = 8000
    levels = ["DEBUG", "INFO", "INFO", "WARNING", "ERROR"]
    expected: list[int] = []
    lines: list[bytes] = []
    for seq in range(total):
        trace = f"trace-{seq // 4}"  # four lines per trace: kept or dropped together
        level = levels[seq % len(levels)]
        logger = "chatter" if seq % 3 else "orders"
        record = {"seq": seq, "level": level, "logger": logger, "trace_id": trace}
        lines.append(orjson.dumps(record) + b"\n")
        exempt = logger != "chatter" or level in ("WARNING", "ERROR")
        if exempt or fraction(trace.encode()) < 0.25:
            expected.append(seq)
    app = shipping.logs / "app.log"
    half = total // 2
    app.write_bytes(b"".join(lines[:half]))
    first_half = sum(1 for seq in expected if seq < half)
    with shipping.daemon:
        shipping.wait_some_delivered(first_half // 2)
        shipping.daemon.kill9()  # mid-file: the restart resumes from the checkpoint
        with app.open("ab") as f:
            f.write(b"".join(lines[half:]))
        shipping.daemon.start()
        shipping.wait_started()

        def all_shipped() -> bool:
            return sum(shipping.delivered().values()) >= len(expected)

        wait_for(all_shipped, 120, interval=0.3, message="the kept lines delivered")
        assert shipping.daemon.terminate() == ExitCode.OK
    delivered = shipping.delivered()
    assert delivered == Counter(expected)  # exactly the kept lines, each once
    kept_chatter = [
        r
        for r in shipping.records()
        if r["logger"] == "chatter" and r["level"] in ("DEBUG", "INFO")
    ]
    assert kept_chatter and all(r["sample_rate"] == 0.25 for r in kept_chatter)
    # The objects still tile the whole file: dropped lines are covered, never re-read.
    client = store["seaweed"].client()
    ranges = sorted(
        (int(m["shipper-start"]), int(m["shipper-end"]))
        for m in (
            client.head_object(Bucket=store["bucket"], Key=k)["Metadata"]
            for k in s3_keys(client, store["bucket"], "e2e/")
        )
    )
    assert ranges[0][0] == 0 and ranges[-1][1] == app.stat().st_size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_a_key_block_cut_by_a_restart_is_still_redacted(tmp_path: Path, stop: str) -> None:
    # The daemon stops after the first lines of a private key; the rest of the key
    # is written while it is down. The redactor follows key blocks line by line:
    # started again in the middle of one, it must know it is inside it.
    shipping = Shipping(tmp_path, "directory")
    app = shipping.logs / "app.log"
    body = [base64.b64encode(hashlib.sha512(b"cut-key-%d" % i).digest()).decode() for i in range(6)]
    with app.open("wb") as f:
        f.write(b'{"seq": 0, "message": "before the key"}\n')
        f.write(b"seq=1 loading key -----BEGIN RSA PRIVATE KEY-----\n")
        f.write(body[0].encode() + b"\n" + body[1].encode() + b"\n")
    shipping.daemon.start()
    wait_for(lambda: len(shipping.records()) >= 4, 60, message="the first key lines")
    if stop == "kill9":
        shipping.daemon.kill9()
    else:
        assert shipping.daemon.terminate() == ExitCode.OK
    with app.open("ab") as f:
        f.write(b"".join(line.encode() + b"\n" for line in body[2:]))
        f.write(b"-----END RSA PRIVATE KEY-----\n")
        f.write(b'{"seq": 2, "message": "after the key"}\n')
    with shipping.daemon:
        wait_for(lambda: len(shipping.records()) >= 10, 60, message="every line delivered")
        assert shipping.daemon.terminate() == ExitCode.OK
    records = shipping.records()
    seqs, others = delivered_seqs(records)
    assert_exact(seqs, range(3))
    assert others == Counter({"[REDACTED:private_key]": 7}), others
    shipped = b"".join(files_under(shipping.shipped).values())
    for line in body:
        assert line[:40].encode() not in shipped, f"key material shipped: {line[:40]}"
