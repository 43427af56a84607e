"""Secret detectors: find the spans of a string that hold a secret.

Each detector is a regex plus, where a regex alone would flag harmless text,
a check on what it matched: card numbers must pass Luhn and start like a real
card, ``Basic`` credentials must decode to ``user:password``, and so on. Every
pattern is linear in the length of its input (bounded repeats, no nested
quantifiers over the same characters), so a 1 MB string costs milliseconds.

A detector reports spans; what replaces them is the redactor's business.
"""

from __future__ import annotations

__all__ = [
    "BUILTIN_DETECTORS",
    "DETECTOR_NAMES",
    "Detector",
    "LinearRegexError",
    "Span",
    "card_number_ok",
    "compile_linear",
    "find_spans",
    "line_trigger",
    "luhn_ok",
    "trigger",
]

import base64
import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2  # type: ignore[import-untyped]

#: ``(start, end, detector name)``: the characters ``text[start:end]`` are a secret.
Span = tuple[int, int, str]
#: Given a match, the spans of it that are secrets (none when the check rejects it).
Check = Callable[[re.Match[str]], list[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    #: A compiled ``re`` pattern (built-ins) or RE2 pattern (from the config): anything
    #: with ``finditer`` whose matches have ``span(group)``.
    pattern: Any
    #: A cheap test that must pass before the pattern runs; None runs it always.
    hint: Callable[[str], bool] | None = None
    #: Turns a match into secret spans; the default is the ``secret`` group, else all of it.
    check: Check | None = None
    secret_group: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "secret_group", self.pattern.groupindex.get("secret", 0))

    def spans(self, text: str) -> Iterable[Span]:
        if self.hint is not None and not self.hint(text):
            return
        for match in self.pattern.finditer(text):
            if self.check is not None:
                found = self.check(match)
            elif self.secret_group and match.group(self.secret_group) is not None:
                found = [match.span(self.secret_group)]
            else:
                found = [match.span()]
            for start, end in found:
                if end > start:
                    yield start, end, self.name


class LinearRegexError(ValueError):
    """A pattern RE2 cannot compile (backreferences, lookaround) or a bad one."""


def compile_linear(pattern: str | bytes) -> Any:
    """Compile with RE2: matching takes time linear in the input, whatever the pattern.

    Patterns from the config run on every string of every record; a backtracking
    engine would let one careless pattern stall the daemon on one long line.
    """
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the error to stderr
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise LinearRegexError(str(reason)) from None


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Issuer prefixes and the lengths cards under them have. A 16-digit order id passes
# Luhn one time in ten; also starting like a card makes it about one in a hundred.
_CARD_PREFIXES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset({14, 16, 17, 18, 19})),  # Diners Club
    ("36", "36", frozenset({14, 16, 17, 18, 19})),
    ("38", "39", frozenset({16, 17, 18, 19})),
    ("3528", "3589", frozenset({16, 17, 18, 19})),  # JCB
    ("6011", "6011", frozenset({16, 17, 18, 19})),  # Discover
    ("644", "649", frozenset({16, 17, 18, 19})),
    ("65", "65", frozenset({16, 17, 18, 19})),
    ("62", "62", frozenset({16, 17, 18, 19})),  # UnionPay
    ("2200", "2204", frozenset({16, 17, 18, 19})),  # Mir
)


def card_number_ok(digits: str) -> bool:
    """A plausible payment card number: an issuer's prefix and length, and Luhn."""
    for low, high, lengths in _CARD_PREFIXES:
        head = digits[: len(low)]
        if low <= head <= high and len(digits) in lengths:
            return luhn_ok(digits)
    return False


# A run of digit groups joined by single spaces or dashes. Found whole, once, and
# searched for cards in Python: a regex bounded to a card's length would miss a card
# after other numbers, and an unbounded one with lookarounds would backtrack.
_DIGIT_RUN_RE = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_CARD_GROUP_RE = re.compile(r"[0-9]+")


def _card_check(match: re.Match[str]) -> list[tuple[int, int]]:
    """The cards in a run of digit groups: consecutive groups, one separator between.

    A card is found among other numbers ("ref 1234 5678 4111 1111 1111 1111"),
    but not inside a word ("x4111..."), a float's fraction or a longer digit group.
    """
    text = match.string
    base = match.start()
    run = match.group()
    before = text[base - 1] if base else " "
    after_at = match.end()
    after = text[after_at] if after_at < len(text) else " "
    # Whether the run's first and last groups may start and end a card.
    left_ok = not (before.isalnum() or before in "_.+-")
    right_ok = not (
        after.isalnum()
        or after in "_-"
        or (after == "." and text[after_at + 1 : after_at + 2].isdigit())
    )
    groups = [(m.start(), m.end()) for m in _CARD_GROUP_RE.finditer(run)]
    found: list[tuple[int, int]] = []
    first = 0
    while first < len(groups):
        end = _card_from(run, groups, first, left_ok or first > 0, right_ok)
        if end is None:
            first += 1
            continue
        found.append((base + groups[first][0], base + groups[end][1]))
        first = end + 1
    return found


def _card_from(
    run: str, groups: list[tuple[int, int]], first: int, start_ok: bool, right_ok: bool
) -> int | None:
    """The index of the last group of a card starting at group ``first``, if any."""
    if not start_ok:
        return None
    digits = ""
    separator = ""
    for last in range(first, len(groups)):
        group = run[groups[last][0] : groups[last][1]]
        if last > first:
            between = run[groups[last - 1][1] : groups[last][0]]
            if separator and between != separator:
                return None  # "4111 1111-1111 1111" mixes separators: not written as a card
            separator = between
            # Written in groups, a card's are 4-4-4-4, 4-6-5 or 4-4-4-1: 3 to 6 digits
            # each but the last. A UUID's "54057679-4441-4048" is no card.
            previous = groups[last - 1][1] - groups[last - 1][0]
            if not (3 <= previous <= 6 and len(group) <= 6):
                return None
        digits += group
        if len(digits) > 19:
            return None
        if len(digits) >= 13 and (last < len(groups) - 1 or right_ok) and card_number_ok(digits):
            return last
    return None


def _b64_user_password(match: re.Match[str]) -> list[tuple[int, int]]:
    token = match.group("secret")
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return []
    return [match.span("secret")] if b":" in decoded else []


def _bearer_token(match: re.Match[str]) -> list[tuple[int, int]]:
    """Tokens are long and not plain words: "Bearer authentication" is not one."""
    token = match.group("secret")
    if len(token) >= 20 or any(c.isdigit() for c in token):
        return [match.span("secret")]
    return []


def _pair_value(match: re.Match[str]) -> list[tuple[int, int]]:
    for group in ("dq", "sq", "bare"):
        if match.group(group) is not None:
            value = match.group(group)
            if value.casefold() in _NOT_SECRETS or not any(c.isalnum() for c in value):
                return []
            if match.group().lower().startswith("pwd") and value.startswith(("/", "~")):
                return []  # "pwd=/srv/app" is the working directory
            return [match.span(group)]
    return []


def _aws_secret(match: re.Match[str]) -> list[tuple[int, int]]:
    """40 hex digits after "aws" are a commit id; after "secret", a secret all the same."""
    if _is_hex(match.group("secret")) and "secret" not in match.group().lower():
        return []
    return [match.span("secret")]


_HEX = frozenset("0123456789abcdefABCDEF")


def _is_hex(text: str) -> bool:
    """Whether ``text`` is all hex digits, as commit ids and SHA-1 sums are."""
    return all(char in _HEX for char in text)


_NOT_SECRETS = frozenset({"", "null", "none", "nil", "true", "false", "undefined", "[redacted]"})
_PAIR_KEYWORDS = (
    r"passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|credentials?"
)
_DIGITS4 = re.compile(r"\d{4}")


def _has(*needles: str) -> Callable[[str], bool]:
    def hint(text: str) -> bool:
        return any(needle in text for needle in needles)

    return hint


BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        "credit_card",
        _DIGIT_RUN_RE,
        hint=lambda text: _DIGITS4.search(text) is not None,
        check=_card_check,
    ),
    Detector(
        "email",
        re.compile(
            r"(?<![\w.%+-])(?<!://)[A-Za-z0-9._%+-]{1,64}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])"
        ),
        hint=_has("@"),
    ),
    Detector(
        "us_ssn",
        re.compile(
            r"(?<![\w-])(?!000|666|9[0-9]{2})[0-9]{3}([- ])"
            r"(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![\w-])"
        ),
        hint=lambda text: _DIGITS4.search(text) is not None,
    ),
    Detector(
        "jwt",
        # Starting only where a token starts keeps a run of "eyJeyJ..." linear.
        re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        hint=_has("eyJ"),
    ),
    Detector(
        "aws_access_key_id",
        re.compile(
            r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)"
            r"[A-Z0-9]{16}(?![A-Za-z0-9])"
        ),
        hint=_has("A"),
    ),
    Detector(
        "aws_secret_access_key",
        re.compile(
            r"(?i:aws|secret|access[_ -]?key)[\w .-]{0,30}?[\"']?\s{0,5}[:=]\s{0,5}[\"']?"
            r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        hint=lambda text: len(text) >= 40,
        check=_aws_secret,
    ),
    Detector(
        "bearer",
        re.compile(r"(?i:\bbearer)\s{1,5}(?P<secret>[A-Za-z0-9._~+/-]{8,}=*)"),
        hint=_has("earer", "EARER"),
        check=_bearer_token,
    ),
    Detector(
        "basic_auth",
        re.compile(r"(?i:\bbasic)\s{1,5}(?P<secret>[A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])"),
        hint=_has("asic", "ASIC"),
        check=_b64_user_password,
    ),
    Detector(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:.*?-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|.*)",
            re.DOTALL,
        ),
        hint=_has("PRIVATE KEY"),
    ),
    Detector(
        "url_credentials",
        re.compile(
            r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://"
            r"(?P<secret>[^\s/?#@:\"'<>]*:[^\s/?#@\"'<>]*|[^\s/?#@:\"'<>]{16,})@"
        ),
        hint=lambda text: "://" in text and "@" in text,
    ),
    Detector(
        "secret_pair",
        re.compile(
            # Quotes may be escaped (\"), as in JSON logged inside a JSON string.
            rf"(?i:{_PAIR_KEYWORDS})(?:\\{{0,3}}[\"'])?[ \t]{{0,5}}[:=][ \t]{{0,5}}"
            r"(?:\\{0,3}\"(?P<dq>[^\"\n]{0,4096}?)\\{0,3}\"|'(?P<sq>[^'\n]{0,4096})'"
            r"|(?P<bare>[^\s\"',;&)}\]\\]{1,4096}))"
        ),
        hint=lambda text: "=" in text or ":" in text,
        check=_pair_value,
    ),
)
DETECTOR_NAMES = tuple(d.name for d in BUILTIN_DETECTORS)

# One RE2 pass (linear, no backtracking, no per-alternative cost) rules out most
# strings before any detector runs: every built-in detector's matches contain one
# of these. ISO timestamps, request ids and version strings hold none of them.
_TRIGGER_WORDS = ("bearer", "basic", "aws", "secret", "passw", "pwd", "token", "key", "credential")


def _spelled(word: str) -> str:
    """``word`` with anything but letters and digits between its letters, as key
    names are matched ("k-e-y" normalises to "key")."""
    return "[^0-9A-Za-z\\n]*".join(re.escape(char) for char in word)


_TRIGGER_SOURCE = "|".join(
    (
        "@",
        "eyJ",
        "://",
        "PRIVATE KEY",
        "A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|IPA|NPA|NVA|PKA)",
        f"(?i:{'|'.join(_spelled(word) for word in _TRIGGER_WORDS)})",
        # A card as one run of digits (not a float's fraction), or in groups of
        # 3 to 6 digits with spaces or dashes; an SSN as 3-2-4.
        r"(?m:^)[0-9]{13}|[^.0-9][0-9]{13}",
        "[0-9]{3,6} [0-9]{3,6} [0-9]",
        "[0-9]{3,6}-[0-9]{3,6}-[0-9]",
        "[0-9]{3} [0-9]{2} [0-9]{4}",
        "[0-9]{3}-[0-9]{2}-[0-9]{4}",
    )
)
_TRIGGER = compile_linear(_TRIGGER_SOURCE)


def trigger(text: str) -> bool:
    """Whether any built-in detector could match ``text``."""
    return _TRIGGER.search(text) is not None


def line_trigger(names: Sequence[str]) -> Any:
    """``trigger`` for raw lines of ASCII without escapes, plus key names: an RE2 pattern.

    Without a backslash, the characters of every string in a JSON line appear in
    it as they are, so a line this rules out holds no string any detector could
    match. ``names`` are normalised key names (letters and digits): a key whose
    normalised name contains one is spelled with any case and any separators
    between the letters ("API_KEY", "api-key"), and this looks for all of those.
    No alternative matches a newline on its own, so the pattern can search many
    lines joined by newlines in one pass.
    """
    spelled = [
        "[^0-9A-Za-z\n]*".join(re.escape(char) for char in name) for name in names if name.isascii()
    ]
    source = _TRIGGER_SOURCE if not spelled else f"{_TRIGGER_SOURCE}|(?i:{'|'.join(spelled)})"
    return compile_linear(source.encode())


def find_spans(text: str, detectors: Sequence[Detector]) -> list[Span]:
    """Every detector's spans over the original text, overlaps merged, in order.

    Merging rather than redacting detector by detector means one replacement
    (a hash, say) is never scanned and mangled by the next detector.
    """
    spans = sorted(span for detector in detectors for span in detector.spans(text))
    merged: list[Span] = []
    for start, end, name in spans:
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2])
        else:
            merged.append((start, end, name))
    return merged
