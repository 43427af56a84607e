"""Redaction: secrets are replaced before a record reaches the spool or the network.

One walk over the record does both kinds of redaction:

* by key: the value under a secret key (``password``, ``api_key``, ...) is
  masked, hashed, trimmed or removed, whatever it holds;
* by pattern: every other string value (and so every plain-text line, which
  is a record's ``message``) is searched by the detectors, and only the
  secret part is replaced. Numbers that are card numbers are caught too.

The walk uses an explicit stack, so nesting as deep as the parser accepts
cannot exhaust the interpreter's recursion limit.
"""

from __future__ import annotations

__all__ = ["MASK", "PARTIAL_KEEP", "Redactor"]

import bisect
import hashlib
import hmac
import itertools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

from shipper.transform.jsontext import dumps_any
from shipper.transform.redact.detectors import (
    Detector,
    card_number_ok,
    find_spans,
    line_trigger,
    trigger,
)
from shipper.transform.redact.secret_keys import KeyRules, RedactAction, normalise_key

MASK = "[REDACTED]"
#: ``"key": value`` in JSON text, or in JSON escaped inside a string (``\"key\":``).
#: A value is a string (its characters, escapes allowed; cut short, it runs to the
#: end of the line), or it starts a scalar, object or array (``_value_end``). Each
#: string scan stops at the next quote, so the whole search stays linear.
_KEYED_RE = re.compile(
    r'"(?P<key>[^"\\\n]{1,128})"[ \t]{0,5}:[ \t]{0,5}'
    r'(?:"(?P<string>(?:[^"\\\n]|\\[^\n])*)(?:"|(?=\n)|\Z)|(?P<value>[^\s"\\]))'
    r'|\\"(?P<ekey>[^"\\\n]{1,128})\\"[ \t]{0,5}:[ \t]{0,5}'
    r'(?:\\"(?P<estring>(?:[^"\\\n]|\\(?!")[^\n])*)(?:\\"|(?=\n)|\Z)|(?P<evalue>[^\s"\\]))'
)
_NEWLINE = ord("\n")
#: How many trailing characters ``partial`` keeps; shorter values are masked whole.
PARTIAL_KEEP = 4
#: Strings shorter than this hold no secret any detector knows ("pwd=x" is 5).
_SHORTEST_SECRET = 5
_AWS_SECRET_LENGTH = 40
_AWS_SECRET_RE = re.compile(r"[A-Za-z0-9/+]{40}")
#: The key material at the end of a line inside a block (after any prefix), a
#: header of an encrypted key, or nothing (a blank line).
_PEM_BODY_RE = re.compile(
    r"(?:(?<=\s)|^)(?:[A-Za-z0-9+/=]{4,}|(?:Proc-Type|DEK-Info|Comment):.*)\s*$|^\s*$"
)
PEM_BEGIN_RE = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PEM_END_RE = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
#: A key in a plain-text log spans lines; after this many it is no key (an unmatched BEGIN).
PEM_MAX_LINES = 200
_MAX_OPEN_STREAMS = 1024


class Redactor:
    """Applies key rules and detectors to a record, in place; counts what it replaced.

    ``detectors`` pairs each enabled detector with its action. Built-in
    detectors are skipped for strings that cannot hold any of their secrets;
    ``custom`` detectors (from the config) run on every string. ``hash_key`` is
    the HMAC key of the ``hash`` action: the same secret always gives the same
    pseudonym, so a user can still be followed without being named.
    """

    def __init__(
        self,
        *,
        keys: Mapping[str, RedactAction],
        detectors: Sequence[tuple[Detector, RedactAction]],
        custom: Sequence[tuple[Detector, RedactAction]] = (),
        counters: Counter[str],
        hash_key: bytes | None = None,
    ) -> None:
        actions = [*keys.values(), *(a for _, a in detectors), *(a for _, a in custom)]
        if "hash" in actions and not hash_key:
            raise ValueError("the hash action needs a hash key")
        self.keys = KeyRules(keys)
        # A key matches a rule when its normalised name ends with the rule's, so a
        # line holding such a key holds the rule's name, spelled some way.
        self._line_trigger = line_trigger(tuple(self.keys.rules))
        self.hash_key = hash_key or b""
        self.counters = counters
        self.actions: dict[str, RedactAction] = {d.name: a for d, a in (*detectors, *custom)}
        self._builtin_and_custom = tuple(d for d, _ in (*detectors, *custom))
        self._custom = tuple(d for d, _ in custom)
        self._cards = "credit_card" in self.actions
        self._aws_secret = "aws_secret_access_key" in self.actions
        self._private_key = "private_key" in self.actions
        #: Streams (files) inside a private key block: lines seen so far, by stream.
        self._pem_open: dict[str, int] = {}

    def __call__(
        self,
        record: dict[str, Any],
        *,
        text_stream: str | None = None,
        json_stream: str | None = None,
        clean: bool = False,
    ) -> dict[str, Any]:
        """Redact ``record``; the stream names the file of its line: ``text_stream``
        for a plain-text line, ``json_stream`` for a JSON one.

        A private key written to a line-oriented log spans lines, so the lines
        after a ``BEGIN ... PRIVATE KEY`` line of the same file are redacted up to
        its END: the text of plain-text lines, the ``log`` field of JSON lines
        (Docker's log files).

        ``clean`` says the record is exactly what was parsed from a line that
        :meth:`lines_to_search` ruled out: nothing in it needs a look.
        """
        stream = text_stream if text_stream is not None else json_stream
        if clean and (stream is None or stream not in self._pem_open):
            return record
        if stream is not None and self._private_key:
            self._follow_key_block(stream, record, text=text_stream is not None, redact=True)
        self._walk(record)
        return record

    def lines_to_search(self, lines: Sequence[bytes]) -> set[int] | None:
        """The indices of the lines that may hold a secret; None means every line.

        One RE2 pass over all the lines joined: most chunks of a log hold no line
        any rule or detector could match, and then that one pass is all it costs.
        Lines with a backslash (JSON escapes) or non-ASCII bytes are always searched.
        """
        if self._custom:
            return None  # config patterns may match anything: every string is searched
        data = b"\n".join(lines)
        odd = b"\\" in data or not data.isascii()
        dirty = (
            {i for i, line in enumerate(lines) if b"\\" in line or not line.isascii()}
            if odd
            else set()
        )
        search = self._line_trigger.search
        starts: list[int] = []  # where each line starts in ``data``; built at the first match
        position = 0
        while position < len(data) and (found := search(data, position)) is not None:
            if not starts:
                starts = [0, *itertools.accumulate(len(line) + 1 for line in lines)]
            # A match may begin with the newline before its line ("\n4111...").
            first = found.start() + (data[found.start()] == _NEWLINE)
            index = bisect.bisect_right(starts, first) - 1
            dirty.add(index)
            position = starts[index + 1]
        return dirty

    def line_is_clean(self, line: bytes) -> bool:
        """Whether nothing in ``line`` (a record, or what enrichment adds) needs a look."""
        return self.lines_to_search([line]) == set()

    def _walk(self, record: dict[str, Any]) -> None:
        """Key rules on the way down; the strings found are searched afterwards.

        Most records hold no secret, and one test over all their strings at once
        says so far faster than a test per string.
        """
        strings: list[tuple[dict[str, Any] | list[Any], Any, str]] = []
        removals: list[tuple[dict[str, Any], str]] = []
        stack: list[dict[str, Any] | list[Any]] = [record]
        action_of = self.keys.action
        string_action_of = self.keys.string_action
        cards = self._cards
        shortest = _SHORTEST_SECRET
        # Exact type tests: parsed JSON holds only these types, and ``type(x) is``
        # costs a fraction of ``isinstance`` on this path, run for every value.
        while stack:
            node = stack.pop()
            if type(node) is list:
                self._walk_list(node, stack, strings)
                continue
            mapping = cast(dict[str, Any], node)
            # Replacing values while iterating is safe; removing keys waits until after.
            for key, value in mapping.items():
                kind = type(value)
                # A key naming a secret in more words ("SECRET_KEY") counts for strings.
                action = string_action_of(key) if kind is str else action_of(key)
                if action is not None:
                    self.counters["redacted_key"] += 1
                    if action == "remove":
                        removals.append((mapping, key))
                    else:
                        mapping[key] = self._replace_value(value, action)
                elif kind is str:
                    if len(value) == _AWS_SECRET_LENGTH and self._aws_secret_under(key, value):
                        mapping[key] = self._redact_whole(value, "aws_secret_access_key")
                    elif len(value) >= shortest and not (
                        value.isdigit() and value.isascii() and _is_tracing_id(key)
                    ):
                        strings.append((mapping, key, value))
                elif kind is dict or kind is list:
                    stack.append(value)
                elif (kind is int or kind is float) and cards and not _is_tracing_id(key):
                    mapping[key] = self._card_number(value)
        for parent, name in removals:
            del parent[name]
        if not strings:
            return
        if not self._custom:
            # Key names count too: JSON kept as text holds them ("session": ...).
            joined = "\x00".join(text for _, _, text in strings)
            if self._line_trigger.search(joined.encode("utf-8", "surrogatepass")) is None:
                return
        for owner, where, text in strings:
            owner[where] = self._scan(text)

    def _walk_list(
        self,
        node: list[Any],
        stack: list[dict[str, Any] | list[Any]],
        strings: list[tuple[dict[str, Any] | list[Any], Any, str]],
    ) -> None:
        for index, value in enumerate(node):
            kind = type(value)
            if kind is str:
                if len(value) >= _SHORTEST_SECRET:
                    strings.append((node, index, value))
            elif kind is dict or kind is list:
                stack.append(value)
            elif (kind is int or kind is float) and self._cards:
                node[index] = self._card_number(value)

    def _scan(self, text: str) -> str:
        if '":' in text or '" :' in text:
            text = self._redact_keyed_text(text)
        detectors = self._builtin_and_custom if trigger(text) else self._custom
        spans = find_spans(text, detectors) if detectors else []
        if not spans:
            return text
        parts: list[str] = []
        position = 0
        for start, end, name in spans:
            self.counters[f"redacted_{name}"] += 1
            parts.append(text[position:start])
            parts.append(self._replace_text(text[start:end], name))
            position = end
        parts.append(text[position:])
        return "".join(parts)

    def _redact_keyed_text(self, text: str) -> str:
        """Key rules on JSON that is text: a line cut short, too deep, or not quite JSON.

        Such a line ships as a string, and a secret under ``"session": ...`` in it
        must go as surely as in a parsed record. JSON inside a JSON string
        (``\\"session\\":\\"...\\"``) is handled too.
        """
        parts: list[str] = []
        position = 0
        for match in _KEYED_RE.finditer(text):
            if match.start() < position:
                continue  # inside a value already replaced
            escaped = match.group("ekey") is not None
            key, string, value = (
                ("ekey", "estring", "evalue") if escaped else ("key", "string", "value")
            )
            name = match.group(key)
            has_string = match.group(string) is not None
            action = self.keys.string_action(name) if has_string else self.keys.action(name)
            if action is None:
                continue
            self.counters["redacted_key"] += 1
            if match.group(string) is not None:
                start, end = match.span(string)
                replaced = self._replace_value(text[start:end], action)
                replacement = "" if action == "remove" else str(replaced)
            else:
                start = match.start(value)
                end = _value_end(text, start, escaped=escaped)
                quote = '\\"' if escaped else '"'
                replacement = f"{quote}{MASK}{quote}"
            parts.append(text[position:start])
            parts.append(replacement)
            position = end
        if not parts:
            return text
        parts.append(text[position:])
        return "".join(parts)

    def _redact_whole(self, text: str, name: str) -> str:
        self.counters[f"redacted_{name}"] += 1
        return self._replace_text(text, name)

    def _aws_secret_under(self, key: str, value: str) -> bool:
        """A bare 40-character secret under a key such as ``aws_secret_access_key``."""
        if not self._aws_secret or _AWS_SECRET_RE.fullmatch(value) is None:
            return False
        name = normalise_key(key)
        return "secret" in name or "accesskey" in name or ("aws" in name and "key" in name)

    def _card_number(self, value: float) -> Any:
        """A card number logged as a JSON number (even as 4111111111111111.0) is a
        secret all the same."""
        if not 10**12 <= value < 10**19:
            return value
        if isinstance(value, float) and not value.is_integer():
            return value
        digits = str(int(value))
        if card_number_ok(digits):
            self.counters["redacted_credit_card"] += 1
            return self._replace_text(digits, "credit_card") or MASK
        return value

    def _replace_value(self, value: Any, action: RedactAction) -> Any:
        if action == "hash":
            text = value if isinstance(value, str) else dumps_any(value).decode()
            return self._pseudonym(text)
        if action == "partial" and isinstance(value, str):
            return _partial(value)
        return MASK

    def _replace_text(self, secret: str, name: str) -> str:
        action = self.actions[name]
        if action == "remove":
            return ""
        if action == "hash":
            return self._pseudonym(_canonical(secret, name))
        if action == "partial":
            return _partial(secret)
        return f"[REDACTED:{name}]"

    def _pseudonym(self, text: str) -> str:
        data = text.encode("utf-8", "surrogatepass")  # a parsed string may hold lone surrogates
        digest = hmac.new(self.hash_key, data, hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest[:32]}"

    @property
    def open_key_blocks(self) -> Mapping[str, int]:
        """The streams inside a private key block now (a live view): each of their
        lines needs a look, however clean it is."""
        return self._pem_open

    def enter_key_block(self, stream: str) -> None:
        """Start ``stream`` inside a private key block (lines read again from its middle)."""
        if self._private_key:
            self._pem_open[stream] = 0

    def forget(self, stream: str) -> None:
        self._pem_open.pop(stream, None)

    def follow(self, stream: str, record: dict[str, Any], *, text: bool) -> None:
        """A record that will not be shipped (sampled out) still opens or ends a key block."""
        if self._private_key:
            self._follow_key_block(stream, record, text=text, redact=False)

    def _follow_key_block(
        self, stream: str, record: dict[str, Any], *, text: bool, redact: bool
    ) -> None:
        """Private keys in line-oriented logs: the lines between BEGIN and END.

        Inside a block, a line whose last word is base64 (after any prefix a log
        format adds: a timestamp, ``stdout F``) is key material and is replaced;
        the first line that is not ends the block, as does END or 200 lines.
        """
        field = "message" if text else "log"
        line = record.get(field)
        if not isinstance(line, str):
            return
        rest_from = 0
        if stream in self._pem_open:
            end = PEM_END_RE.search(line)
            body = None if end is not None else _PEM_BODY_RE.search(line)
            seen = self._pem_open.pop(stream) + 1
            if end is not None:
                rest_from = end.end()
                if redact:
                    self.counters["redacted_private_key"] += 1
                    replaced = self._replace_text(line[:rest_from], "private_key")
                    record[field] = replaced + line[rest_from:]
            elif body is not None and seen <= PEM_MAX_LINES:
                self._pem_open[stream] = seen
                if redact and body.end() > body.start():
                    self.counters["redacted_private_key"] += 1
                    replaced = self._replace_text(line[body.start() :], "private_key")
                    record[field] = line[: body.start()] + replaced
                return
        # A BEGIN with no END after it (after this line's END, when it has one) opens one.
        begin = PEM_BEGIN_RE.search(line, rest_from) if "PRIVATE KEY" in line else None
        if begin is not None and PEM_END_RE.search(line, begin.end()) is None:
            if len(self._pem_open) >= _MAX_OPEN_STREAMS:
                self._pem_open.clear()
            self._pem_open[stream] = 0


def _partial(value: str) -> str:
    if len(value) > 2 * PARTIAL_KEEP:
        return "****" + value[-PARTIAL_KEEP:]
    return MASK


def _canonical(secret: str, name: str) -> str:
    """One spelling per secret, so its pseudonym is the same however it was written."""
    if name in ("credit_card", "us_ssn"):
        return "".join(ch for ch in secret if ch.isdigit())
    if name == "email":
        return secret.casefold()
    return secret


#: Tracing ids written in decimal (Datadog's ``dd.trace_id``, ``dd.span_id``) are
#: random 64-bit numbers: about one in a hundred would pass for a card number.
_TRACING_ID_SUFFIXES = ("traceid", "spanid", "parentid")


def _is_tracing_id(key: str) -> bool:
    return normalise_key(key).endswith(_TRACING_ID_SUFFIXES)


def _value_end(text: str, start: int, *, escaped: bool) -> int:
    """Where the JSON value at ``start`` ends: a scalar's last character, or the
    bracket closing an object or array (the end of the text when none does)."""
    if text[start] not in "[{":
        end = start
        while end < len(text) and text[end] not in ",}] \t\n\\":
            end += 1
        return end
    depth = 0
    in_string = False
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\" and not escaped:
            index += 2  # an escaped character inside a string
            continue
        if char == '"':
            in_string = not in_string
        elif not in_string and char in "[{":
            depth += 1
        elif not in_string and char in "]}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return len(text)
