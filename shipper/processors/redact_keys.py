"""Which keys hold secrets: the default list, normalised names and suffixes.

Keys match case-insensitively on normalised names (``apiKey``, ``api-key`` and
``API_KEY`` all become ``apikey``), and a key also matches when its normalised
name ends with a rule's: ``db_password`` and ``x-auth-token`` are caught by
``password`` and ``token``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SECRET_KEYS", "KeyRules", "RedactAction", "normalise_key"]

from collections.abc import Mapping
from typing import Literal

RedactAction = Literal["mask", "hash", "remove", "partial"]

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
#: Distinct keys remembered with their decision; logs reuse few keys, so this is ample.
_CACHE_SIZE = 65_536


def normalise_key(key: str) -> str:
    """``API_KEY``, ``api-key`` and ``apiKey`` all become ``apikey``."""
    return "".join(ch for ch in key.casefold() if ch.isalnum())


class KeyRules:
    """Maps a record key to the action for its value, or None to leave it alone."""

    def __init__(self, rules: Mapping[str, RedactAction]) -> None:
        self.rules = {normalise_key(k): action for k, action in rules.items()}
        #: Longest first, so "access_token" is tried before "token".
        self._suffixes = sorted(self.rules, key=len, reverse=True)
        #: Keys already decided: read directly on the hot path, filled by ``action``.
        self.known: dict[str, RedactAction | None] = {}

    def action(self, key: str) -> RedactAction | None:
        try:
            return self.known[key]
        except KeyError:
            pass
        name = normalise_key(key)
        action = self.rules.get(name)
        if action is None:
            for rule in self._suffixes:
                if name.endswith(rule):
                    action = self.rules[rule]
                    break
        if len(self.known) >= _CACHE_SIZE:
            self.known.clear()
        self.known[key] = action
        return action
