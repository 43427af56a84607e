"""Redaction by key: values under secret-looking keys never leave the host.

Keys match case-insensitively, at any depth (inside lists too), on normalised
names: ``apiKey``, ``api-key`` and ``API_KEY`` all match ``api_key``. The walk
uses an explicit stack, so nesting as deep as the parser accepts cannot
exhaust the interpreter's recursion limit.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SECRET_KEYS", "KeyRedactor", "RedactAction", "normalise_key"]

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson

RedactAction = Literal["mask", "hash", "remove", "partial"]
MASK = "[REDACTED]"
#: How many trailing characters ``partial`` keeps; shorter values are masked whole.
PARTIAL_KEEP = 4

DEFAULT_SECRET_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "authorization",
    "cookie",
    "set_cookie",
    "session",
    "ssn",
    "credit_card",
    "card_number",
    "cvv",
    "private_key",
    "client_secret",
)


def normalise_key(key: str) -> str:
    """``API_KEY``, ``api-key`` and ``apiKey`` all become ``apikey``."""
    return "".join(ch for ch in key.casefold() if ch.isalnum())


class KeyRedactor:
    """Replaces, hashes, trims or removes the values of secret keys, in place.

    ``rules`` maps key names (normalised here) to actions. ``hash_key`` is the
    HMAC key of the ``hash`` action: the same value always gives the same
    pseudonym, so a user can still be followed without being named.
    """

    def __init__(
        self,
        rules: Mapping[str, RedactAction],
        *,
        counters: Counter[str],
        hash_key: bytes | None = None,
    ) -> None:
        self.rules = {normalise_key(k): action for k, action in rules.items()}
        if "hash" in self.rules.values() and not hash_key:
            raise ValueError("the hash action needs a hash key")
        self.hash_key = hash_key or b""
        self.counters = counters

    @classmethod
    def defaults(
        cls, *, counters: Counter[str], action: RedactAction = "mask", extra: Iterable[str] = ()
    ) -> KeyRedactor:
        return cls({k: action for k in (*DEFAULT_SECRET_KEYS, *extra)}, counters=counters)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        stack: list[dict[str, Any] | list[Any]] = [record]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(item for item in node if isinstance(item, dict | list))
                continue
            for key in list(node):
                value = node[key]
                action = self.rules.get(normalise_key(key))
                if action is None:
                    if isinstance(value, dict | list):
                        stack.append(value)
                    continue
                self.counters[f"redacted_key_{action}"] += 1
                if action == "remove":
                    del node[key]
                else:
                    node[key] = self._replace(value, action)
        return record

    def _replace(self, value: Any, action: RedactAction) -> Any:
        if action == "hash":
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            digest = hmac.new(self.hash_key, text.encode(), hashlib.sha256).hexdigest()
            return f"hmac-sha256:{digest[:32]}"
        if action == "partial" and isinstance(value, str) and len(value) > 2 * PARTIAL_KEEP:
            return "*" * 4 + value[-PARTIAL_KEEP:]
        return MASK
