"""Which keys hold secrets: the default list, normalised names and suffixes.

Keys match case-insensitively on normalised names (``apiKey``, ``api-key`` and
``API_KEY`` all become ``apikey``). A key also matches when its normalised name
ends with a rule's (``db_password`` and ``x-auth-token`` are caught by
``password`` and ``token``). A key made of a rule's words and then only words
that still name the secret (``SECRET_KEY``, ``password_confirmation``,
``api_key_value``) matches when its value is a string; ``token_type``,
``token_prefix`` and ``session_id`` describe a secret and are left alone, as
are numbers such as ``token_key: 5``. Words are split at separators and
camelCase humps, so ``tokenizer`` is not caught by ``token``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_SECRET_KEYS", "KeyRules", "RedactAction", "key_words", "normalise_key"]

import re
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
#: Words that, after a secret's name, still name the secret (``SECRET_KEY``,
#: ``password_confirmation``, ``api_key_value``); others name something about it
#: that may be logged (``token_type``, ``token_prefix``, ``session_id``).
_SECRET_FORMS = frozenset(
    {
        "key",
        "value",
        "confirmation",
        "confirm",
        "plain",
        "plaintext",
        "raw",
        "hash",
        "hashed",
        "encoded",
        "b64",
        "base64",
        "string",
        "str",
        "text",
        "new",
        "old",
        "current",
    }
)
#: Distinct keys remembered with their decision; logs reuse few keys, so this is ample.
_CACHE_SIZE = 65_536


_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")


def key_words(key: str) -> tuple[str, ...]:
    """``SECRET_KEY``, ``secretKey`` and ``secret-key`` are all ("secret", "key")."""
    return tuple(word.casefold() for word in _WORD_RE.findall(key))


def normalise_key(key: str) -> str:
    """``API_KEY``, ``api-key`` and ``apiKey`` all become ``apikey``."""
    return "".join(ch for ch in key.casefold() if ch.isalnum())


class KeyRules:
    """Maps a record key to the action for its value, or None to leave it alone."""

    def __init__(self, rules: Mapping[str, RedactAction]) -> None:
        self.rules = {normalise_key(k): action for k, action in rules.items()}
        #: Rules as words, most words first: ("access", "token") before ("token",).
        self._word_rules = sorted(
            ((key_words(k), action) for k, action in rules.items() if key_words(k)),
            key=lambda rule: -len(rule[0]),
        )
        #: Longest first, so "access_token" is tried before "token".
        self._suffixes = sorted(self.rules, key=len, reverse=True)
        #: Keys already decided: read directly on the hot path, filled by ``action``.
        self.known: dict[str, RedactAction | None] = {}
        self.known_prefix: dict[str, RedactAction | None] = {}

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

    def string_action(self, key: str) -> RedactAction | None:
        """For a string value: also a key that starts with a rule's words."""
        action = self.action(key)
        if action is not None:
            return action
        try:
            return self.known_prefix[key]
        except KeyError:
            pass
        words = key_words(key)
        for rule, rule_action in self._word_rules:
            rest = words[len(rule) :]
            if words[: len(rule)] == rule and all(word in _SECRET_FORMS for word in rest):
                action = rule_action
                break
        if len(self.known_prefix) >= _CACHE_SIZE:
            self.known_prefix.clear()
        self.known_prefix[key] = action
        return action
