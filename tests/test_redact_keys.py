"""Redaction by key: unit and property tests, calling the processor directly."""

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.processors.redact_keys import MASK, KeyRedactor, normalise_key

SECRET = "hunter2-very-secret-value"


def redactor(**rules: Any) -> KeyRedactor:
    return KeyRedactor(rules, counters=Counter(), hash_key=b"k" * 32)


@pytest.mark.parametrize("key", ["api_key", "apiKey", "api-key", "API_KEY", "Api.Key"])
def test_spellings_of_one_key_all_match(key: str) -> None:
    assert normalise_key(key) == "apikey"
    assert redactor(api_key="mask")({key: SECRET}) == {key: MASK}


def test_any_depth_and_inside_lists() -> None:
    record = {"a": [{"b": {"Password": SECRET}}, [{"token": SECRET}]], "ok": 1}
    counters: Counter[str] = Counter()
    KeyRedactor.defaults(counters=counters)(record)
    assert SECRET not in orjson.dumps(record).decode()
    assert record["ok"] == 1 and counters["redacted_key_mask"] == 2


def test_actions() -> None:
    out = redactor(password="remove", card_number="partial", user="hash", token="mask")(
        {"password": SECRET, "card_number": "4111111111111111", "user": "ana", "token": {"x": 1}}
    )
    assert "password" not in out
    assert out["card_number"] == "****1111"
    assert out["token"] == MASK  # a whole object under a secret key goes
    assert out["user"].startswith("hmac-sha256:") and "ana" not in out["user"]
    again = redactor(user="hash")({"user": "ana"})
    assert again["user"] == out["user"]  # a stable pseudonym
    assert redactor(card_number="partial")({"card_number": "12345"}) == {"card_number": MASK}


def test_hash_needs_a_key() -> None:
    with pytest.raises(ValueError, match="hash key"):
        KeyRedactor({"user": "hash"}, counters=Counter())


def test_deep_nesting_does_not_recurse() -> None:
    record: dict[str, Any] = {"password": SECRET}
    innermost = record
    for _ in range(5000):
        record = {"n": [record]}
    KeyRedactor.defaults(counters=Counter())(record)
    assert innermost == {"password": MASK}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    json_values, st.sampled_from(["password", "apiKey", "SET-COOKIE", "client_secret"]), st.data()
)
def test_a_planted_secret_never_survives(doc: Any, key: str, data: st.DataObject) -> None:
    record: dict[str, Any] = {"root": doc}
    # Plant the secret under a secret key at a random object (or a new one) in the document.
    objects = [record]
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            objects.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    target = data.draw(st.sampled_from(objects))
    target[key] = SECRET
    KeyRedactor.defaults(counters=Counter(), extra=["apikey"])(record)
    assert SECRET not in orjson.dumps(record).decode()
