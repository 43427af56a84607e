"""Redaction properties: no planted secret survives, no input breaks the redactor or
stalls it, ordinary values (ids, timestamps, versions, addresses) come out untouched,
and a private key written to a text log is redacted line by line.

The default redactor throughout: the default secret keys and every built-in
detector, all with ``mask``.
"""

from __future__ import annotations

import base64
import copy
import json
import multiprocessing
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shipper.transform.redact.detectors import BUILTIN_DETECTORS, card_number_ok, luhn_ok
from shipper.transform.redact.redactor import Redactor
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS, RedactAction, normalise_key

ACTIONS: tuple[RedactAction, ...] = ("mask", "hash", "partial", "remove")
PEM_MASK = "[REDACTED:private_key]"


def default_redactor(action: RedactAction = "mask") -> Redactor:
    return Redactor(
        keys=dict.fromkeys(DEFAULT_SECRET_KEYS, action),
        detectors=[(d, action) for d in BUILTIN_DETECTORS],
        counters=Counter(),
        hash_key=b"k" * 32,
    )


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def containers(node: Any) -> Iterator[dict[str, Any] | list[Any]]:
    """Every dict and list of a document, the root first."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            yield node
            stack.extend(node.values() if isinstance(node, dict) else node)


def string_values(node: Any) -> Iterator[str]:
    for found in containers(node):
        for value in found.values() if isinstance(found, dict) else found:
            if isinstance(value, str):
                yield value


# --- strategies ---------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson encodes
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)
#: A record: always an object at the top, like a parsed JSON log line.
JSON_DOCS = st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6)

#: Filler around an embedded secret: ordinary words, letters and spaces only.
WORDS = ("the", "user", "order", "request", "failed", "retry", "payment", "Login", "ERROR")
FILLER = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Secret:
    #: What is planted: a string, or an int (a card number logged as a JSON number).
    value: str | int
    #: Substrings of it that must not be in the redacted record's JSON.
    parts: tuple[str, ...]
    #: Digits that must not be in the digits of any redacted string value (cards, SSNs).
    digits: str = ""
    #: Planted under this key (a dict value), never embedded in text.
    key: str | None = None
    #: Compare case-insensitively (emails).
    casefold: bool = False


def luhn_complete(partial: str) -> str:
    return next(partial + d for d in string.digits if luhn_ok(partial + d))


# Visa 4 (13, 16, 19 digits), Mastercard 51-55, American Express 34/37 (15 digits).
CARD_ISSUERS = (
    [("4", 13), ("4", 16), ("4", 19)]
    + [(str(p), 16) for p in range(51, 56)]
    + [("34", 15), ("37", 15)]
)


def grouped(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, position = [], 0
    for size in sizes:
        if position < len(digits):
            parts.append(digits[position : position + size])
            position += size
    return sep.join(parts)


@st.composite
def cards(draw: st.DrawFn) -> Secret:
    prefix, length = draw(st.sampled_from(CARD_ISSUERS))
    size = length - len(prefix) - 1
    digits = luhn_complete(prefix + draw(st.text(string.digits, min_size=size, max_size=size)))
    assert card_number_ok(digits), digits
    written = draw(st.sampled_from(["plain", "spaces", "dashes", "amex", "int"]))
    if written == "int":
        return Secret(int(digits), (digits,), digits)
    if written == "plain":
        text = digits
    elif written == "amex" and length == 15:
        text = grouped(digits, (4, 6, 5), " ")
    else:
        text = grouped(digits, (4,) * 5, "-" if written == "dashes" else " ")
    return Secret(text, (text, digits), digits)


DOMAIN_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,12}[A-Za-z0-9])?", fullmatch=True)


@st.composite
def emails(draw: st.DrawFn) -> Secret:
    local = draw(st.text(ALNUM + "._%+-", min_size=1, max_size=40))
    labels = draw(st.lists(DOMAIN_LABEL, min_size=1, max_size=3))
    tld = draw(st.text(string.ascii_letters, min_size=2, max_size=10))
    address = f"{local}@{'.'.join(labels)}.{tld}"
    return Secret(address, (address,), casefold=True)


@st.composite
def ssns(draw: st.DrawFn) -> Secret:
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    sep = draw(st.sampled_from("- "))
    text = f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"
    return Secret(text, (text,), digits_of(text))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@st.composite
def jwts(draw: st.DrawFn) -> Secret:
    alg = draw(st.sampled_from(["HS256", "RS256", "ES256", "none"]))
    claims = st.integers(0, 2**40) | st.text(max_size=16)
    extra = draw(st.dictionaries(st.sampled_from(["iat", "exp", "name", "scope"]), claims))
    payload = {"sub": draw(st.text(min_size=1, max_size=24)), **extra}
    segments = [
        b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode()),
        b64url(json.dumps(payload, separators=(",", ":")).encode()),
        "" if alg == "none" else b64url(draw(st.binary(min_size=16, max_size=64))),
    ]
    token = ".".join(segments)
    return Secret(token, tuple(s for s in segments if len(s) >= 8))


AWS_KEY_IDS = st.from_regex(r"(AKIA|ASIA)[A-Z0-9]{16}", fullmatch=True).map(
    lambda key_id: Secret(key_id, (key_id,))
)


@st.composite
def aws_secret_keys(draw: st.DrawFn) -> Secret:
    secret = draw(st.text(ALNUM + "/+", min_size=40, max_size=40))
    written = draw(st.sampled_from(["text", "text_upper", "json_key"]))
    if written == "json_key":
        return Secret(secret, (secret,), key="aws_secret_access_key")
    name = "AWS_SECRET_ACCESS_KEY" if written == "text_upper" else "aws_secret_access_key"
    return Secret(f"{name}={secret}", (secret,))


@st.composite
def bearer_tokens(draw: st.DrawFn) -> Secret:
    token = draw(st.text(ALNUM + "._-", min_size=20, max_size=80))
    word = draw(st.sampled_from(["Bearer", "bearer", "Authorization: Bearer"]))
    return Secret(f"{word} {token}", (token,))


@st.composite
def basic_credentials(draw: st.DrawFn) -> Secret:
    user = draw(st.text(min_size=3, max_size=20).filter(lambda u: ":" not in u))
    password = draw(st.text(min_size=3, max_size=30))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return Secret(f"Basic {token}", (token,))


PEM_LABELS = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"]


def pem_lines(label: str, body: bytes, width: int = 64) -> list[str]:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
    return [f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]


@st.composite
def private_keys(draw: st.DrawFn) -> Secret:
    lines = pem_lines(draw(st.sampled_from(PEM_LABELS)), draw(st.binary(min_size=32, max_size=600)))
    return Secret("\n".join(lines), tuple(line for line in lines[1:-1] if len(line) >= 16))


URL_USER = st.from_regex(r"[A-Za-z0-9._~-]{1,16}", fullmatch=True)
URL_PASSWORD = st.from_regex(r"[A-Za-z0-9._~!$&()*+,;=%-]{6,24}", fullmatch=True)


@st.composite
def url_credentials(draw: st.DrawFn) -> Secret:
    scheme = draw(st.sampled_from(["https", "http", "postgres", "redis", "amqp", "mongodb+srv"]))
    user, password = draw(URL_USER), draw(URL_PASSWORD)
    # The host stays in the output: it must not contain the password by chance.
    host = draw(
        st.lists(DOMAIN_LABEL, min_size=1, max_size=3)
        .map(".".join)
        .filter(lambda h: password not in h and user not in h)
    )
    port = draw(st.sampled_from(["", ":5432", ":8443"]))
    path = draw(st.sampled_from(["/", "/path", "/db/orders", "/api/v1/items?page=2"]))
    url = f"{scheme}://{user}:{password}@{host}{port}{path}"
    return Secret(url, (f"{user}:{password}", password))


PAIR_BARE = st.from_regex(r"[A-Za-z0-9!#$%*+./:<=>?@^_`|~-]{8,32}", fullmatch=True)
PAIR_QUOTED = st.from_regex(r"[A-Za-z0-9 !#$%*+./:<=>?@^_|~-]{8,32}", fullmatch=True)


@st.composite
def secret_pairs(draw: st.DrawFn) -> Secret:
    quoted = draw(st.booleans())
    value = draw(
        (PAIR_QUOTED if quoted else PAIR_BARE).filter(
            lambda v: any(c.isalnum() for c in v) and v.strip().casefold() != "undefined"
        )
    )
    if quoted:
        form = draw(st.sampled_from(['password="{}"', "token: '{}'", '"password": "{}"']))
    else:
        form = draw(
            st.sampled_from(
                [
                    "password={}",
                    "passwd={}",
                    "pwd={}",
                    "token: {}",
                    "api_key={}",
                    "client_secret: {}",
                    "PASSWORD = {}",
                ]
            )
        )
    if form.startswith("pwd") and value.startswith(("/", "~")):
        value = "x" + value  # "pwd=/srv/app" is a working directory, left alone by design
    return Secret(form.format(value), (value,))


SECRETS: dict[str, st.SearchStrategy[Secret]] = {
    "credit_card": cards(),
    "email": emails(),
    "us_ssn": ssns(),
    "jwt": jwts(),
    "aws_access_key_id": AWS_KEY_IDS,
    "aws_secret_access_key": aws_secret_keys(),
    "bearer": bearer_tokens(),
    "basic_auth": basic_credentials(),
    "private_key": private_keys(),
    "url_credentials": url_credentials(),
    "secret_pair": secret_pairs(),
}


def fold(text: str, secret: Secret) -> str:
    return text.casefold() if secret.casefold else text


# Digits under a tracing-id key (``span_id``) are left alone by design.
PLAIN_KEYS = st.text(max_size=12).filter(
    lambda k: not normalise_key(k).endswith(("traceid", "spanid", "parentid"))
)


@st.composite
def planted(draw: st.DrawFn, secrets: st.SearchStrategy[Secret]) -> tuple[dict[str, Any], Secret]:
    """A random document with one secret in a random dict or list, maybe inside text."""
    doc = copy.deepcopy(draw(JSON_DOCS))
    secret = draw(secrets)
    # The document must not already hold what the assertion looks for.
    before = fold(orjson.dumps(doc).decode(), secret)
    parts = [fold(part, secret) for part in secret.parts]
    assume(not any(part in before for part in parts))
    if secret.digits:
        assume(secret.digits not in before)
        assume(not any(secret.digits in digits_of(s) for s in string_values(doc)))
    value = secret.value
    if isinstance(value, str) and secret.key is None and draw(st.booleans()):
        text = fold(value, secret)
        value = f"{draw(FILLER)} {value} {draw(FILLER)}"
        # Nor may the filler (a word that happens to be the password, say).
        assume(all(fold(value, secret).count(p) == text.count(p) for p in parts))
    found = list(containers(doc))
    target = found[draw(st.integers(0, len(found) - 1))]
    if isinstance(target, list):
        where = draw(st.integers(0, len(target)))
        target.insert(where, value if secret.key is None else {secret.key: value})
    else:
        target[secret.key if secret.key is not None else draw(PLAIN_KEYS)] = value
    return doc, secret


# --- 1. no planted secret survives --------------------------------------------


@pytest.mark.parametrize("kind", sorted(SECRETS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_no_planted_secret_survives(kind: str, data: st.DataObject) -> None:
    record, secret = data.draw(planted(SECRETS[kind]), label="record, secret")
    assert default_redactor()(record) is record
    out = orjson.dumps(record).decode()
    for part in secret.parts:
        assert fold(part, secret) not in fold(out, secret), f"{part!r} survived: {out}"
    if secret.digits:
        assert secret.digits not in out
        for value in string_values(record):
            assert secret.digits not in digits_of(value), f"{secret.value!r} survived: {value!r}"


@st.composite
def raw_lines(draw: st.DrawFn) -> list[bytes]:
    """Log lines as files hold them: JSON (compact, spaced, ASCII-escaped) or plain text."""
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        shape = draw(st.sampled_from(["planted", "doc", "text", "filler", "pem"]))
        if shape == "pem":
            lines += [line.encode() for line in draw(private_keys()).value.splitlines()]
            continue
        if shape == "text":
            secret = draw(st.sampled_from(sorted(SECRETS)).flatmap(lambda k: SECRETS[k]))
            lines.append(f"{draw(FILLER)} {secret.value} {draw(FILLER)}".encode())
            continue
        if shape == "filler":
            lines.append(draw(FILLER).encode())
            continue
        doc = draw(planted(st.sampled_from(sorted(SECRETS)).flatmap(lambda k: SECRETS[k])))[0]
        if shape == "doc":
            doc = draw(JSON_DOCS)
        encoding = draw(st.sampled_from(["orjson", "ascii", "spaced"]))
        if encoding == "orjson":
            lines.append(orjson.dumps(doc))
        else:
            lines.append(json.dumps(doc, ensure_ascii=encoding == "ascii").encode())
    return [line.replace(b"\n", b" ") for line in lines]


@settings(max_examples=300, deadline=None)
@given(lines=raw_lines())
def test_the_pre_check_never_skips_a_line_the_full_search_would_change(
    lines: list[bytes],
) -> None:
    """Lines the one-pass pre-check rules out come out as the full search leaves them."""
    from shipper.app.chain import build_chain

    fast = build_chain(host="h", environ={})
    slow = build_chain(host="h", environ={})
    assert slow.redactor is not None
    slow.redactor.lines_to_search = lambda lines: None  # type: ignore[method-assign]
    ends = list(range(1, len(lines) + 1))
    got = fast.run(lines, ends, read_time=0.0, stream="f")
    expected = slow.run(lines, ends, read_time=0.0, stream="f")
    assert bytes(got.data) == bytes(expected.data)
    assert fast.counters == slow.counters


# --- 2. nothing raises, in bounded time ---------------------------------------


@settings(max_examples=200, deadline=None)
@given(doc=JSON_DOCS, action=st.sampled_from(ACTIONS))
def test_arbitrary_json_never_raises(doc: dict[str, Any], action: RedactAction) -> None:
    started = time.perf_counter()
    out = default_redactor(action)(doc)
    assert time.perf_counter() - started < 1.0
    orjson.dumps(out)


TEXT_LINES = (
    st.text(max_size=80)
    | st.sampled_from(["-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"])
    | st.text(ALNUM + "+/=", max_size=64)
)


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.tuples(st.sampled_from(["a.log", "b.log"]), TEXT_LINES), max_size=30))
def test_arbitrary_text_lines_never_raise(lines: list[tuple[str, str]]) -> None:
    redactor = default_redactor()
    for stream, line in lines:
        out = redactor({"message": line}, text_stream=stream)
        assert isinstance(out["message"], str)


LEAF = "login password=hunter2-x9 card 4111 1111 1111 1111 from ana@example.com"


def nested(depth: int, leaf: Any) -> dict[str, Any]:
    node = leaf
    for level in range(depth):
        node = {"k": node, "n": level} if level % 2 else [level, node]
    return {"root": node}


def test_nesting_200_deep() -> None:
    record = nested(200, LEAF)
    started = time.perf_counter()
    default_redactor()(record)
    assert time.perf_counter() - started < 1.0
    out = orjson.dumps(record).decode()
    assert "hunter2" not in out and "4111" not in out and "ana@" not in out
    assert out.count('"n":') == 100  # the rest of the document is intact


def test_nesting_far_deeper_than_the_recursion_limit() -> None:
    record = nested(50_000, LEAF)
    default_redactor()(record)
    node: Any = record["root"]
    while not isinstance(node, str):
        node = node["k"] if isinstance(node, dict) else node[1]
    assert "hunter2" not in node and "4111" not in node


def test_ten_thousand_keys() -> None:
    record: dict[str, Any] = {
        f"field_{i}": f"request {i} served in {i % 97} ms" for i in range(10_000)
    }
    for i in range(0, 10_000, 100):
        record[f"field_{i}"] = f"retry with password=pw{i}-secret and token: tk{i}-secret"
    expected_plain = {k: v for k, v in record.items() if "secret" not in v}
    started = time.perf_counter()
    default_redactor()(record)
    assert time.perf_counter() - started < 5.0
    assert len(record) == 10_000
    assert "-secret" not in orjson.dumps(record).decode()
    assert {k: record[k] for k in expected_plain} == expected_plain


MB = 1_000_000
#: Per 1 MB string, on a slow 2-core machine; they take well under a second.
LIMIT_SECS = 5.0


def fill(unit: str, size: int = MB) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def base64_megabyte() -> str:
    encoded = base64.b64encode(random.Random(1).randbytes(MB * 3 // 4)).decode()
    return "\n".join(encoded[i : i + 64] for i in range(0, len(encoded), 64))[:MB]


HUGE: dict[str, Callable[[], str]] = {
    "digits": lambda: fill("4111111111111111"),
    "digits_spaces": lambda: fill("1 "),
    "digit_groups": lambda: fill("4111 "),
    "digits_dashes": lambda: fill("12-"),
    "a_at": lambda: fill("a@"),
    "emails": lambda: fill("ana@example.com "),
    "at_labels": lambda: "x@" + fill("a."),
    "eyJ": lambda: fill("eyJ"),
    "password_eq": lambda: fill("password="),
    "token_open_quote": lambda: 'token="' + fill("x"),
    "pem_without_end": lambda: "-----BEGIN RSA PRIVATE KEY-----\n" + base64_megabyte(),
    "pem_begins": lambda: fill("-----BEGIN RSA PRIVATE KEY-----"),
    "url_user_pass": lambda: fill("https://a:b@"),
    "url_colon_at": lambda: fill("https://:@"),
    "url_no_at": lambda: "https://" + fill("a:"),
    "basic_overpadded": lambda: "Basic " + fill("A") + "===",
    "bearer_long": lambda: "Bearer " + fill("a"),
    "aws_eq": lambda: fill("aws_secret_access_key="),
    "akia": lambda: fill("AKIA"),
    "letters": lambda: fill("lorem ipsum "),
}


def time_in_child(make_text: Callable[[], str], limit: float) -> tuple[str, float, int]:
    """Redact ``make_text()`` as a text line in a forked child that is killed after ``limit``.

    Returns ``("ok", seconds, len(message))`` or ``("raised", 0, 0)`` with the error
    in the first item. A child still running at the limit fails the test.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        text = make_text()
        redactor = default_redactor()
        send.send("built")
        started = time.perf_counter()
        try:
            out = redactor({"message": text}, text_stream="app.log")
        except BaseException as exc:
            send.send((f"raised {exc!r}", 0.0, 0))
        else:
            send.send(("ok", time.perf_counter() - started, len(out["message"])))

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        assert receive.poll(30), "the child did not build its input"
        assert receive.recv() == "built"
        if not receive.poll(limit):
            pytest.fail(f"still redacting after {limit} s")
        result: tuple[str, float, int] = receive.recv()
        return result
    finally:
        if process.is_alive():
            process.kill()
        process.join()


@pytest.mark.parametrize("case", list(HUGE))
def test_megabyte_strings_are_redacted_in_bounded_time(case: str) -> None:
    outcome, seconds, length = time_in_child(HUGE[case], LIMIT_SECS)
    assert outcome == "ok"
    assert seconds < LIMIT_SECS
    assert length > 0


# --- 3. ordinary values stay intact -------------------------------------------

FIXED_ORDINARY = [
    "ORD-2024-000123",
    "ORD-789",
    "INV-2024-11-000042",
    "1234567812345678",  # 16 digits, no card prefix
    "9999 8888 7777 6666",
    "4111111111111112",  # a Visa prefix, fails Luhn
    "550e8400-e29b-41d4-a716-446655440000",
    "2024-01-15T10:30:45.123456Z",
    "2024-01-15 10:30:45,123",
    "1705314645",
    "1705314645123",
    "v1.2.3",
    "2.31.0",
    "1.2.3-rc.1+build.5",
    "192.168.1.1",
    "10.0.0.254:8443",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "3f786850e387550fdab836ed7e6dc881de23001b",
    "+1 555 123 4567",
    "+44 20 7946 0958",
    "(555) 123-4567",
    "1.5s",
    "250ms",
    "PT1H30M",
    "00:01:23.456",
    "$1,234.56",
    "99.99",
]


@st.composite
def non_card_numbers(draw: st.DrawFn) -> str:
    if draw(st.booleans()):  # a prefix no issuer uses
        head = draw(st.sampled_from("01789"))
        digits = head + draw(st.text(string.digits, min_size=15, max_size=15))
    else:  # any prefix, but the check digit is wrong
        partial = draw(st.text(string.digits, min_size=15, max_size=15))
        good = luhn_complete(partial)[-1]
        digits = partial + draw(st.sampled_from([d for d in string.digits if d != good]))
    assert not card_number_ok(digits)
    return grouped(digits, (4,) * 4, draw(st.sampled_from(["", " ", "-"])))


def epoch(scale: int) -> st.SearchStrategy[str]:
    # 2001-09-09 (the first 10-digit second) to 2090: millis then start with 1..3, never 4.
    return st.integers(1_000_000_000 * scale, 3_800_000_000 * scale).map(str)


ORDINARY = st.one_of(
    st.sampled_from(FIXED_ORDINARY),
    st.integers(1, 999_999).map(lambda n: f"ORD-2024-{n:06d}"),
    non_card_numbers(),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    epoch(1),
    epoch(1000),
    st.tuples(st.integers(0, 40), st.integers(0, 99), st.integers(0, 999)).map(
        lambda v: "v{}.{}.{}".format(*v)
    ),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.binary(min_size=20, max_size=20).map(bytes.hex),
    st.tuples(st.integers(200, 999), st.integers(200, 999), st.integers(0, 9999)).map(
        lambda p: "+1 {} {} {:04d}".format(*p)
    ),
    st.integers(0, 10**6).map(lambda ms: f"{ms}ms"),
    st.floats(0, 1e4, allow_nan=False).map(lambda s: f"{s:.3f}s"),
)
ORDINARY_INTS = st.one_of(
    epoch(1).map(int),
    epoch(1000).map(int),
    # As a number a leading 0 goes, and "0370..." can become an American Express number.
    non_card_numbers()
    .map(lambda n: int(digits_of(n)))
    .filter(lambda n: not card_number_ok(str(n))),
    st.integers(-(10**6), 10**6),
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ORDINARY, min_size=1, max_size=8), numbers=st.lists(ORDINARY_INTS))
def test_ordinary_values_stay_intact(values: list[str], numbers: list[int]) -> None:
    record = {
        "message": "ids " + " | ".join(values) + " done",
        "values": values,
        "numbers": numbers,
        "by_name": {f"v{i}": value for i, value in enumerate(values)},
    }
    expected = copy.deepcopy(record)
    redactor = default_redactor()
    assert redactor(record) == expected
    assert redactor({"message": record["message"]}, text_stream="app.log") == {
        "message": expected["message"]
    }
    assert not redactor.counters


# --- 4. a private key across plain-text lines ---------------------------------

OTHER_LINES = st.lists(
    st.sampled_from(WORDS) | st.integers(0, 999).map(str), min_size=1, max_size=8
).map(" ".join) | st.sampled_from(["SGVsbG8gd29ybGQ", "MIIEowIBAAKCAQEA", "ok"])


@settings(max_examples=100, deadline=None)
@given(
    label=st.sampled_from(PEM_LABELS),
    body=st.binary(min_size=1, max_size=1500),
    encrypted=st.booleans(),
    data=st.data(),
)
def test_private_key_across_text_lines(
    label: str, body: bytes, encrypted: bool, data: st.DataObject
) -> None:
    lines = pem_lines(label, body)
    if encrypted:
        lines[1:1] = ["Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,3F17F5316E2BAC89", ""]
    redactor = default_redactor()
    for line in lines:
        # Another file's lines, interleaved, are scanned as usual and come out unchanged.
        for other in data.draw(st.lists(OTHER_LINES, max_size=2), label="other.log"):
            assert redactor({"message": other}, text_stream="other.log") == {"message": other}
        # A blank line inside an encrypted key's headers holds nothing: it stays blank.
        expected = "" if line == "" else PEM_MASK
        assert redactor({"message": line}, text_stream="app.log") == {"message": expected}
    after = "Server started on port 8080"
    assert redactor({"message": after}, text_stream="app.log") == {"message": after}
    assert redactor.counters["redacted_private_key"] == sum(1 for line in lines if line)


def test_private_key_end_line_keeps_what_follows_the_marker() -> None:
    redactor = default_redactor()
    lines = pem_lines("RSA PRIVATE KEY", b"k" * 100)
    for line in lines[:-1]:
        redactor({"message": line}, text_stream="app.log")
    out = redactor({"message": lines[-1] + " loaded for ana@example.com"}, text_stream="app.log")
    assert out == {"message": f"{PEM_MASK} loaded for [REDACTED:email]"}


def test_private_key_in_one_stream_leaves_another_stream_alone() -> None:
    redactor = default_redactor()
    begin, body, *_ = pem_lines("RSA PRIVATE KEY", b"k" * 100)
    redactor({"message": begin}, text_stream="app.log")
    assert redactor({"message": body}, text_stream="other.log") == {"message": body}
    assert redactor({"message": body}, text_stream="app.log") == {"message": PEM_MASK}


# --- found while writing these ------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ref 1234 5678 4111 1111 1111 1111",
        "ids 1234-5678-4111-1111-1111-1111",
    ],
)
def test_card_after_two_groups_of_digits(text: str) -> None:
    record = {"message": text}
    default_redactor()(record)
    assert "4111 1111 1111 1111" not in record["message"]
    assert "4111-1111-1111-1111" not in record["message"]


@pytest.mark.parametrize(
    "secret",
    [
        "4111111111111111/abcdefghijklmnopqrstuvw",  # a card number first
        "AKIAABCDEFGHIJKLMNOP/abcdefghijklmnopqrs",  # an access key id first
    ],
)
def test_aws_secret_under_its_key_is_masked_whole(secret: str) -> None:
    """Not just the part another detector recognises: the rest is the secret too."""
    assert len(secret) == 40
    record = {"aws_secret_access_key": secret}
    default_redactor()(record)
    assert record == {"aws_secret_access_key": "[REDACTED:aws_secret_access_key]"}


def test_a_line_that_mentions_a_private_key_opens_no_block() -> None:
    redactor = default_redactor()
    redactor({"message": "Loading PRIVATE KEY from vault"}, text_stream="app.log")
    line = "Server started on port 8080"
    assert redactor({"message": line}, text_stream="app.log") == {"message": line}


def test_password_in_escaped_json_text() -> None:
    # A JSON body logged as a JSON string inside a JSON string (container runtimes do this).
    record = {"message": 'request body={\\"user\\":\\"ana\\",\\"password\\":\\"hunter2-x9\\"}'}
    default_redactor()(record)
    assert "hunter2" not in record["message"]
