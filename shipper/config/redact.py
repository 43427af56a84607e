"""``[redact]``: secret keys, detectors and their actions, and the hash key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import cast, get_args

from shipper.config.model import RedactChoice, RedactSettings
from shipper.config.reader import COUNTER_NAME_RE, Declared, Problems, Table, compile_linear_pattern
from shipper.transform.redact.detectors import DETECTOR_NAMES, Detector
from shipper.transform.redact.secret_keys import DEFAULT_SECRET_KEYS, RedactAction, normalise_key

_REDACT_ACTIONS: tuple[str, ...] = get_args(RedactChoice)
_REDACT_KEYS = ("enabled", "key_action", "keys", "detectors", "custom", "hash_key_env")
_CUSTOM_KEYS = ("name", "pattern", "action")


#: An HMAC key shorter than this is guessable; pseudonyms would name their users.
_MIN_HASH_KEY_BYTES = 16


def parse_redact(table: Table | None, environ: Mapping[str, str]) -> RedactSettings:
    if table is None:
        return RedactSettings()
    table.check_keys(_REDACT_KEYS)
    declared = Declared(table, RedactSettings)
    key_action = cast(RedactAction, declared.choice("key_action", _REDACT_ACTIONS[:-1]))
    keys: dict[str, RedactAction] = dict.fromkeys(DEFAULT_SECRET_KEYS, key_action)
    keys_table = table.table("keys")
    for name, choice in _action_table(keys_table).items():
        if not normalise_key(name):
            table.problem(f"keys.{name}", "a key name needs at least one letter or digit")
        elif choice == "off":
            # Any spelling lifts the key: "Set-Cookie" = "off" lifts set_cookie.
            for known in [k for k in keys if normalise_key(k) == normalise_key(name)]:
                del keys[known]
        else:
            keys[name] = choice
    detectors: dict[str, RedactAction] = dict.fromkeys(DETECTOR_NAMES, "mask")
    for name, choice in _action_table(table.table("detectors")).items():
        if name not in DETECTOR_NAMES:
            close = difflib.get_close_matches(name, DETECTOR_NAMES, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            table.problem(f"detectors.{name}", f"unknown detector{hint}")
        elif choice == "off":
            del detectors[name]
        else:
            detectors[name] = choice
    custom = _parse_custom_detectors(table)
    hash_key_env = declared.string("hash_key_env")
    hash_key: bytes | None = None
    if "hash" in (*keys.values(), *detectors.values(), *(a for _, a in custom)):
        value = environ.get(hash_key_env, "")
        # The variable's bytes as they are: a key need not be UTF-8.
        hash_key = value.encode("utf-8", "surrogateescape")
        if len(hash_key) < _MIN_HASH_KEY_BYTES:
            table.problem(
                "hash_key_env",
                f"the hash action needs a key of at least {_MIN_HASH_KEY_BYTES} bytes in "
                f"${hash_key_env}" + (" (it is not set)" if not value else ""),
            )
        elif isinstance(table.problems, Problems):
            # Read from the environment like a ${VAR}: never printed either.
            table.problems.expanded_values.setdefault(value, hash_key_env)
    return RedactSettings(
        enabled=declared.boolean("enabled"),
        key_action=key_action,
        keys=MappingProxyType(keys),
        detectors=MappingProxyType(detectors),
        custom=tuple(custom),
        hash_key_env=hash_key_env,
        hash_key=hash_key,
    )


def _action_table(table: Table | None) -> dict[str, RedactChoice]:
    """A table of ``name = "action"``; bad entries are reported and left out."""
    if table is None:
        return {}
    actions: dict[str, RedactChoice] = {}
    for name in table.data:
        choice = table.choice(name, _REDACT_ACTIONS, "mask")
        if choice is not None and isinstance(table.data[name], str):
            actions[name] = cast(RedactChoice, choice)
    return actions


def _parse_custom_detectors(table: Table) -> list[tuple[Detector, RedactAction]]:
    custom: list[tuple[Detector, RedactAction]] = []
    for entry in table.array_of_tables("custom"):
        item = entry.data
        entry.check_keys(_CUSTOM_KEYS)
        if "name" not in item:
            entry.problem("name", "required")
        name = entry.string("name", "")
        pattern = entry.optional_string("pattern")
        if "pattern" not in item:
            entry.problem("pattern", "required")
        action = cast(RedactAction, entry.choice("action", _REDACT_ACTIONS[:-1], "mask"))
        if name and not COUNTER_NAME_RE.fullmatch(name):
            entry.problem("name", f"must match ^{COUNTER_NAME_RE.pattern}$ (it names a counter)")
            continue
        if name in DETECTOR_NAMES or any(d.name == name for d, _ in custom):
            entry.problem("name", f'"{name}" is already a detector\'s name')
            continue
        compiled = compile_linear_pattern(entry, "pattern", pattern)
        if name and compiled is not None:
            if compiled.search("") is not None:
                entry.problem("pattern", "matches the empty string, so it would match everywhere")
            else:
                custom.append((Detector(name, compiled), action))
    return custom
