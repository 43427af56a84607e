"""Reads one TOML table at a time: typed getters that collect every problem.

Every problem is collected before failing, so an operator fixes a broken file in one pass
instead of one error per restart. A value expanded from the environment is never quoted
back: it may be a secret.
"""

from __future__ import annotations

import datetime
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shipper.config.model import Bounds, bounds_of, default_of
from shipper.errors import ConfigProblem
from shipper.redact_output import OutputScrubber
from shipper.transform.redact.detectors import LinearRegexError, compile_linear
from shipper.units import format_size, parse_size

#: A name that becomes part of a counter's name (custom detectors, sample rules).
COUNTER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REFERENCE_RE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)
_TOML_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (Mapping, "table"),
    (datetime.datetime, "datetime"),
    (datetime.date, "date"),
    (datetime.time, "time"),
)


class Problems(list[ConfigProblem]):
    """The problems found so far, and what is needed to word them without a secret.

    Every ``Table`` of one parse shares this list, so each can tell whether a value
    it reports came from the environment.
    """

    def __init__(self) -> None:
        super().__init__()
        #: Key path -> the variables its string was expanded from.
        self.expanded_from: dict[str, tuple[str, ...]] = {}
        #: Each text taken from the environment -> its variable's name.
        self.expanded_values: dict[str, str] = {}

    def without_expanded_values(self) -> list[ConfigProblem]:
        """The problems, with any text from the environment that a message still holds
        (a value quoted under another key, a library's error) hidden."""
        scrubber = OutputScrubber(self.expanded_values)
        return [ConfigProblem(p.key_path, scrubber.text(p.message)) for p in self]


def interpolate(value: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    """Expand ``${VAR}`` in every string value; keys are left alone so the schema stays fixed."""
    if isinstance(value, str):
        return _expand(value, path, environ, problems)
    if isinstance(value, Mapping):
        return {k: interpolate(v, join_path(path, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(value)]
    return value


def _expand(text: str, path: str, environ: Mapping[str, str], problems: Problems) -> str:
    """Shell-like expansion: ``${VAR:-default}`` also applies the default when VAR is empty.

    Records which variables the value at ``path`` came from, and what each gave, so
    that no message or log line shows it.
    """
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"]:
            problems.append(ConfigProblem(path, _malformed_message(match.start())))
            return match[0]
        name, default = match["name"], match["default"]
        names.append(name)
        if default is not None and not environ.get(name):
            return default
        if name not in environ:
            problems.append(ConfigProblem(path, f"environment variable {name} is not set"))
            return ""
        return _from_environment(environ[name], name, path, problems)

    expanded = _REFERENCE_RE.sub(replace, text)
    if names:
        problems.expanded_from[path] = tuple(dict.fromkeys(names))
    return expanded


def _from_environment(value: str, name: str, path: str, problems: Problems) -> str:
    """Values end up in JSON records and object metadata: UTF-8 only."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(ConfigProblem(path, f"environment variable {name} is not valid UTF-8"))
        return ""
    if value:
        problems.expanded_values.setdefault(value, name)
    return value


def _malformed_message(offset: int) -> str:
    return (
        f'malformed "${{" at character {offset + 1}: expected ${{VAR}} or ${{VAR:-default}} '
        "(write $$ for a literal $)"
    )


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def toml_type_name(value: object) -> str:
    """Name values the way the TOML spec does, since that is what the user wrote."""
    for kind, name in _TOML_TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def resolve_path(base_dir: Path, value: str) -> Path:
    """Anchor relative paths at the config file, not at whatever directory the daemon runs in."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


class Table:
    """One TOML table under validation: typed getters record problems and fall back to defaults."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[ConfigProblem]) -> None:
        self.data = data
        self.path = path
        self.problems = problems

    def problem(self, name: str, message: str) -> None:
        self.problems.append(ConfigProblem(join_path(self.path, name), message))

    def expanded_from(self, name: str) -> tuple[str, ...]:
        """The variables the string at ``name`` was expanded from (none: written as it is)."""
        if not isinstance(self.problems, Problems):
            return ()
        return self.problems.expanded_from.get(join_path(self.path, name), ())

    def shown(self, name: str, value: object, *, quoted: bool = True) -> str:
        """How a message quotes the value at ``name``: as it is, or, when it came from
        the environment, by the variables it came from (it may be a secret)."""
        variables = self.expanded_from(name)
        if variables:
            return "a value from " + " and ".join(f"${{{v}}}" for v in variables)
        return f'"{value}"' if quoted else str(value)

    def check_keys(self, allowed: Sequence[str]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problem(key, f"unknown key{hint}")

    def table(self, name: str, *, required: bool = False) -> Table | None:
        """Missing optional tables read as empty; None means "already reported, skip it"."""
        if name not in self.data:
            if required:
                self.problem(name, "required")
                return None
            return Table({}, join_path(self.path, name), self.problems)
        raw = self._get(name, Mapping, "a table")
        return None if raw is None else Table(raw, join_path(self.path, name), self.problems)

    def _get(self, name: str, kinds: type | tuple[type, ...], expected: str) -> Any:
        """Return the raw value, or None when absent or of the wrong type (reported)."""
        if name not in self.data:
            return None
        value = self.data[name]
        kinds_tuple = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds_tuple) or (
            isinstance(value, bool) and bool not in kinds_tuple
        ):
            self.problem(name, f"expected {expected}, got {toml_type_name(value)}")
            return None
        return value

    def string(self, name: str, default: str) -> str:
        value = self.optional_string(name)
        return default if value is None else value

    def optional_string(self, name: str) -> str | None:
        value: str | None = self._get(name, str, "a string")
        if value == "":
            self.problem(name, "must not be empty")
            return None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value: bool | None = self._get(name, bool, "a boolean")
        return default if value is None else value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        """A string from a fixed set; ``default=None`` makes the key required."""
        if name not in self.data and default is None:
            self.problem(name, "required")
        value = self.optional_string(name)
        if value is None:
            return default
        if value not in choices:
            allowed = ", ".join(f'"{c}"' for c in choices)
            self.problem(name, f"must be one of {allowed}, got {self.shown(name, value)}")
            return default
        return value

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        return self.choice(name, choices, None) if name in self.data else None

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        value: int | None = self._get(name, int, "an integer")
        if value is None or not self._in_range(name, value, low, high, str):
            return default
        return value

    def size(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw: int | str | None = self._get(
            name, (int, str), 'a size (bytes, or a string like "8MiB")'
        )
        if raw is None:
            return default
        try:
            value = parse_size(raw)
        except ValueError as exc:
            # The parser's message quotes the text; one from the environment is not.
            expanded = self.expanded_from(name)
            self.problem(name, f"invalid size: {self.shown(name, raw)}" if expanded else str(exc))
            return default
        return value if self._in_range(name, value, low, high, show_size) else default

    def _in_range(
        self, name: str, value: int, low: int, high: int | None, show: Callable[[int], str]
    ) -> bool:
        got = self.shown(name, show(value), quoted=False)
        if high is not None and not low <= value <= high:
            self.problem(name, f"must be between {show(low)} and {show(high)}, got {got}")
            return False
        if value < low:
            self.problem(name, f"must be at least {show(low)}, got {got}")
            return False
        return True

    def seconds(
        self, name: str, default: float, *, allow_zero: bool = False, most: float | None = None
    ) -> float:
        """Durations take ints or floats but never bools or strings like "5s"."""
        raw: int | float | None = self._get(name, (int, float), "a number of seconds")
        if raw is None:
            return default
        try:
            value = float(raw)
        except OverflowError:  # a TOML integer too big for a float
            value = math.inf
        if not math.isfinite(value):
            self.problem(name, f"must be a finite number, got {raw!r}")
        elif value < 0 or (value == 0 and not allow_zero):
            self.problem(
                name, f"must be {'at least' if allow_zero else 'greater than'} 0, got {raw!r}"
            )
        elif most is not None and value > most:
            self.problem(name, f"must be at most {most:g}, got {raw!r}")
        else:
            return value
        return default

    def array_of_tables(self, name: str) -> list[Table]:
        """``[[name]]`` entries; entries that are not tables are reported and left out."""
        raw: list[Any] | None = self._get(name, list, "an array of tables")
        tables: list[Table] = []
        for index, item in enumerate(raw or []):
            path = f"{name}[{index}]"
            if isinstance(item, Mapping):
                tables.append(Table(item, join_path(self.path, path), self.problems))
            else:
                self.problem(path, f"expected a table, got {toml_type_name(item)}")
        return tables

    def fraction(self, name: str, default: float) -> float:
        """A rate from 0 to 1."""
        raw: int | float | None = self._get(name, (int, float), "a number from 0 to 1")
        if raw is None:
            return default
        if not 0.0 <= float(raw) <= 1.0:
            self.problem(name, f"must be between 0 and 1, got {raw!r}")
            return default
        return float(raw)

    def string_list(self, name: str, *, required: bool = False) -> list[str]:
        if required and name not in self.data:
            self.problem(name, "required")
        raw: list[Any] | None = self._get(name, list, "an array of strings")
        if raw is None:
            return []
        if required and not raw:
            self.problem(name, "must not be empty")
        items: list[str] = []
        for index, item in enumerate(raw):
            key = f"{name}[{index}]"
            if not isinstance(item, str):
                self.problem(key, f"expected a string, got {toml_type_name(item)}")
            elif not item:
                self.problem(key, "must not be empty")
            else:
                items.append(item)
        return items


def show_size(n: int) -> str:
    """Human units when they are exact, raw bytes otherwise, so messages never mislead."""
    text = format_size(n)
    return text if parse_size(text) == n else f"{n} bytes"


def compile_linear_pattern(table: Table, name: str, pattern: str | None) -> Any:
    """A pattern that runs on every record: RE2, so its time is linear in the input."""
    if pattern is None:
        return None
    try:
        return compile_linear(pattern)
    except LinearRegexError as exc:
        table.problem(
            name, f"invalid regular expression: {exc} (RE2 syntax: no lookaround or backreferences)"
        )
        return None


class Declared:
    """A table read against its settings class: each key's default and bounds are the
    ones the class declares (``model.setting``), so no parser repeats them."""

    def __init__(self, table: Table, model: type) -> None:
        self.table = table
        self.model = model

    def default(self, name: str) -> Any:
        return default_of(self.model, name)

    def string(self, name: str) -> str:
        return self.table.string(name, self.default(name))

    def boolean(self, name: str) -> bool:
        return self.table.boolean(name, self.default(name))

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        return self.table.choice(name, choices, self.default(name)) or self.default(name)

    def fraction(self, name: str) -> float:
        return self.table.fraction(name, self.default(name))

    def integer(self, name: str) -> int:
        bounds = bounds_of(self.model, name)
        return self.table.integer(name, self.default(name), *_int_bounds(bounds))

    def size(self, name: str) -> int:
        bounds = bounds_of(self.model, name)
        return self.table.size(name, self.default(name), *_int_bounds(bounds))

    def seconds(self, name: str) -> float:
        bounds = bounds_of(self.model, name)
        return self.table.seconds(
            name, self.default(name), allow_zero=bounds.allow_zero, most=bounds.at_most
        )

    def optional_integer(self, name: str) -> int | None:
        """Off (the declared ``None``) unless set; a bad value is reported."""
        if name not in self.table.data:
            return None
        low, high = _int_bounds(bounds_of(self.model, name))
        return self.table.integer(name, low, low, high)

    def optional_size(self, name: str) -> int | None:
        if name not in self.table.data:
            return None
        low, high = _int_bounds(bounds_of(self.model, name))
        return self.table.size(name, low, low, high)

    def optional_seconds(self, name: str) -> float | None:
        if name not in self.table.data:
            return None
        bounds = bounds_of(self.model, name)
        return self.table.seconds(name, 0.0, allow_zero=bounds.allow_zero, most=bounds.at_most)


def _int_bounds(bounds: Bounds) -> tuple[int, int | None]:
    high = None if bounds.at_most is None else int(bounds.at_most)
    return (0 if bounds.at_least is None else bounds.at_least), high
