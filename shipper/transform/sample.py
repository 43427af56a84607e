"""Sampling: fewer copies of high-volume noise, never an error lost.

* Records at or above ``keep_level`` are always kept.
* Otherwise the first rule whose field conditions all hold gives a keep-rate.
  The decision is a pure function of the record: a hash of ``key_field`` (so a
  whole trace or user is kept or dropped together, on every host and after
  every restart) or, without one, of the line itself. A key kept at rate r is
  also kept at every rate above r.
* Kept records of a sampled rule carry the rate (multiplied into any rate the
  application already sampled at), so counts can be reweighted.
* A per-key cap keeps at most ``max_per_sec`` records of one key (say, one
  message) per second of record time, and says how many it suppressed in a
  summary record at most once per ``summary_interval_secs``.
"""

from __future__ import annotations

__all__ = ["LEVELS", "CapLimit", "FieldCondition", "SampleRule", "Sampler", "level_number"]

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shipper.transform.jsontext import dumps_any

#: Level names as the common loggers write them, on Python's scale.
LEVELS: dict[str, int] = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "INFORMATION": 20,
    "NOTICE": 25,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "ERR": 40,
    "CRITICAL": 50,
    "CRIT": 50,
    "FATAL": 50,
    "ALERT": 50,
    "EMERGENCY": 50,
    "EMERG": 50,
    "PANIC": 50,
    # java.util.logging
    "FINEST": 5,
    "FINER": 5,
    "FINE": 10,
    "CONFIG": 15,
    "SEVERE": 40,
}
#: A level word in a plain-text line: "2026-01-02 10:00:00 ERROR payment failed".
#: Any case: nginx writes "[error]", syslog-style formats "<err>".
_TEXT_LEVEL_RE = re.compile(
    r"\b(" + "|".join(sorted(LEVELS, key=len, reverse=True)) + r")\b", re.IGNORECASE
)
#: How far into a plain-text line its level is looked for.
_TEXT_LEVEL_SPAN = 200
_HASH_SCALE = float(2**64)
#: Distinct cap keys tracked at once; past it, keys idle for a second are forgotten.
_MAX_CAP_KEYS = 10_000
#: Summary records per interval; smaller keys are added up into one "other keys" record.
_MAX_SUMMARIES = 100
#: Longer cap keys are kept as their SHA-256 (and shown so in summaries).
_CAP_KEY_CHARS = 256
_DIGEST_KEY = "\x00sha256:"


def level_number(value: Any) -> int | None:
    """A level as a number on Python's scale, or None when it is not one we know."""
    if isinstance(value, str):
        return LEVELS.get(value.strip().upper())
    if type(value) is int and 0 <= value <= 100:
        return value
    return None


def _field(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path; a flat key with the dots in its name is tried first."""
    if len(path) > 1:
        flat = record.get(".".join(path))
        if flat is not None:
            return flat
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """A field equals one of ``values``, or (as a string) matches ``regex``."""

    path: tuple[str, ...]
    values: tuple[str | int | float | bool, ...] = ()
    #: A compiled pattern with ``search``: RE2 from the config, or ``re``.
    regex: Any = None

    def holds(self, record: dict[str, Any]) -> bool:
        value = _field(record, self.path)
        if value is None:
            return False
        if self.regex is not None:
            return isinstance(value, str) and self.regex.search(value) is not None
        return any(_same(value, wanted) for wanted in self.values)


def _same(value: Any, wanted: str | int | float | bool) -> bool:
    """JSON equality: true is not 1, and 1 equals 1.0."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    return bool(value == wanted)


@dataclass(frozen=True, slots=True)
class SampleRule:
    name: str
    rate: float
    conditions: tuple[FieldCondition, ...]
    #: Overrides the sampler's key field for this rule.
    key_field: tuple[str, ...] | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        return all(condition.holds(record) for condition in self.conditions)


@dataclass(frozen=True, slots=True)
class CapLimit:
    key_field: tuple[str, ...]
    max_per_sec: int
    summary_interval_secs: float


class Sampler:
    def __init__(
        self,
        *,
        rules: Sequence[SampleRule],
        counters: Counter[str],
        key_field: tuple[str, ...] | None = None,
        keep_level: int = 30,
        level_fields: Sequence[tuple[str, ...]] = (("level",), ("levelname",), ("severity",)),
        rate_field: str = "sample_rate",
        cap: CapLimit | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.counters = counters
        self.key_field = key_field
        self.keep_level = keep_level
        self.level_fields = tuple(level_fields)
        self.rate_field = rate_field
        self.cap = cap
        #: Per cap key: [the second counted, records seen in it].
        self._windows: dict[str, list[int]] = {}
        self._suppressed: Counter[str] = Counter()
        self._summary_from: float | None = None

    def keep(self, record: dict[str, Any], line: bytes, when: float, *, text: bool) -> bool:
        """Decide one record; a kept record of a sampled rule gets its rate field.

        ``text`` says the record is a wrapped plain-text line, whose level is read
        from the words near its start.
        """
        if self._exempt(record, text):
            return True
        for rule in self.rules:
            if rule.matches(record):
                if not self._sampled_in(rule, record, line):
                    self.counters["sampled_out"] += 1
                    self.counters[f"sampled_out_{rule.name}"] += 1
                    return False
                if rule.rate < 1.0:
                    self._mark_rate(record, rule.rate)
                break
        return self.cap is None or self._under_cap(self.cap, record, when)

    def _exempt(self, record: dict[str, Any], text: bool) -> bool:
        for path in self.level_fields:
            level = level_number(_field(record, path))
            if level is not None:
                return level >= self.keep_level
        if text:
            message = record.get("message")
            if isinstance(message, str):
                found = _TEXT_LEVEL_RE.search(message, 0, _TEXT_LEVEL_SPAN)
                return found is not None and LEVELS[found.group(1).upper()] >= self.keep_level
        return False

    def _sampled_in(self, rule: SampleRule, record: dict[str, Any], line: bytes) -> bool:
        if rule.rate >= 1.0:
            return True
        if rule.rate <= 0.0:
            return False
        path = rule.key_field or self.key_field
        value = None if path is None else _field(record, path)
        if value is None:
            data = line
        elif isinstance(value, str):
            data = value.encode()
        else:
            data = dumps_any(value, sort_keys=True)
        return key_fraction(data) < rule.rate

    def _mark_rate(self, record: dict[str, Any], rate: float) -> None:
        earlier = record.get(self.rate_field)
        if isinstance(earlier, int | float) and not isinstance(earlier, bool) and 0 < earlier <= 1:
            rate *= earlier  # sampled twice: by the application, then here
        record[self.rate_field] = rate

    def _under_cap(self, cap: CapLimit, record: dict[str, Any], when: float) -> bool:
        value = _field(record, cap.key_field)
        if value is None:
            return True
        key = _cap_key(value)
        second = int(when)
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) >= _MAX_CAP_KEYS:
                self._forget_idle(second)
            self._windows[key] = [second, 1]
            return True
        if second > window[0]:
            window[0], window[1] = second, 1
            return True
        window[1] += 1  # the same second, or an earlier one from a file read behind
        if window[1] <= cap.max_per_sec:
            return True
        self.counters["capped"] += 1
        if not self._suppressed:
            self._summary_from = when
        self._suppressed[key] += 1
        return False

    def _forget_idle(self, second: int) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w[0] >= second}
        if len(self._windows) >= _MAX_CAP_KEYS:
            self._windows.clear()

    def summaries(self, when: float, *, force: bool = False) -> list[dict[str, Any]]:
        """Summary records of what the cap suppressed, once an interval has passed."""
        cap = self.cap
        start = self._summary_from
        if cap is None or start is None or not self._suppressed:
            return []
        if not force and when - start < cap.summary_interval_secs:
            return []
        top = self._suppressed.most_common(_MAX_SUMMARIES)
        rest = sum(self._suppressed.values()) - sum(n for _, n in top)
        counts: list[tuple[str | None, int]] = [*top]
        if rest:
            counts.append((None, rest))
        self._suppressed.clear()
        self._summary_from = None
        self.counters["cap_summaries"] += len(counts)
        return [self._summary(cap, key, count, start, when) for key, count in counts]

    @staticmethod
    def _summary(
        cap: CapLimit, key: str | None, count: int, start: float, when: float
    ) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "timestamp": _iso(when),
            "level": "WARNING",
            "message": "records suppressed by the per-key cap",
            "shipper_summary": "capped",
            "cap_field": ".".join(cap.key_field),
            "cap_key": key,
            "suppressed": count,
            "max_per_sec": cap.max_per_sec,
            "from": _iso(start),
            "to": _iso(when),
        }
        if key is not None and key.startswith(_DIGEST_KEY):
            summary["cap_key"] = None
            summary["cap_key_sha256"] = key[len(_DIGEST_KEY) :]
        return summary


def _cap_key(value: Any) -> str:
    """The value itself, or for a long one its digest: never a cut string.

    Summaries show the key, after redaction; a secret cut in half would escape
    its detector, and long values would cost memory per key.
    """
    text = value if isinstance(value, str) else dumps_any(value).decode()
    if len(text) <= _CAP_KEY_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _DIGEST_KEY + digest


def key_fraction(data: bytes) -> float:
    """A uniform number in [0, 1) that depends on ``data`` alone."""
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat().replace("+00:00", "Z")
