"""Keeping secrets out of the daemon's own output: its logs, ``/status``, ``/metrics``
and the messages of its errors.

Two kinds of text are hidden wherever they appear:

- what a URL carries besides where it points: the userinfo of
  ``scheme://user:password@host`` and the query string (a presigned URL's
  signature and credential live there), for the text of boto3 and urllib3
  errors;
- every value the config expanded from the environment (``${VAR}``): whatever
  the variable held is taken for a secret and shown as ``[value of ${VAR}]``.

Records are not touched here: their redaction is :mod:`shipper.transform.redact.redactor`.
"""

from __future__ import annotations

__all__ = [
    "HIDDEN",
    "MIN_HIDDEN_CHARS",
    "OutputScrubber",
    "hide_url_secrets",
    "output_scrubber",
]

import dataclasses
import datetime
import enum
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

#: What stands where a URL's userinfo or query string was.
HIDDEN = "[hidden]"

#: Environment values shorter than this are not searched for in free text: "1" or
#: "eu" would match everywhere, and are no secret worth the name. (Config errors
#: never quote a value from the environment, whatever its length.)
MIN_HIDDEN_CHARS = 4

# A URL with a scheme, up to whitespace or a quoting character. It may be cut short
# (a password with a space in it); what follows is then no URL and is left alone.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>`]+")
# urllib3 names the request without scheme and host: "Max retries exceeded with url:
# /bucket/key?uploads (Caused by ...)".
_RELATIVE_URL_RE = re.compile(r"(?P<lead>\burl: /[^\s?#\"'<>`]*)[?#][^\s\"'<>`]*")


def hide_url_secrets(text: str) -> str:
    """``text`` with the userinfo and query string of every URL in it replaced by HIDDEN.

    Everything up to the URL's last ``@`` counts as userinfo: a password may hold
    an unescaped ``/``, ``?`` or ``#``, and hiding a path that holds an ``@`` is the
    lesser harm. The fragment goes with the query string.
    """
    if "://" in text:
        text = _URL_RE.sub(_hide_in_url, text)
    if "url: /" in text:
        text = _RELATIVE_URL_RE.sub(rf"\g<lead>?{HIDDEN}", text)
    return text


def _hide_in_url(match: re.Match[str]) -> str:
    scheme, _, rest = match[0].partition("://")
    if "@" in rest:
        rest = f"{HIDDEN}@{rest.rpartition('@')[2]}"
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        rest = f"{rest[:cut]}?{HIDDEN}"
    return f"{scheme}://{rest}"


class OutputScrubber:
    """Hides URL secrets and the values it was told about in text and JSON-like data.

    One instance serves the process (:data:`output_scrubber`): the log formatter and
    the HTTP endpoint use it, and the command line tells it each config's values.
    Safe to use from any thread: :meth:`hide` swaps its state in one assignment.
    """

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        #: Text to hide -> the name of the variable it came from.
        self._names: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        if values:
            self.hide(values)

    def hide(self, values: Mapping[str, str]) -> None:
        """From now on hide each text in ``values`` (text -> the variable it came from),
        and its %-encoded forms, as found in request URLs."""
        names = dict(self._names)
        for text, variable in values.items():
            if len(text) < MIN_HIDDEN_CHARS:
                continue
            for form in _encoded_forms(text):
                names.setdefault(form, variable)
        if names == self._names:
            return
        # Longest first, so a value that contains another is hidden whole.
        alternatives = sorted(names, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(t) for t in alternatives)) if names else None
        self._names, self._pattern = names, pattern

    def text(self, text: str) -> str:
        names, pattern = self._names, self._pattern
        if pattern is not None:
            text = pattern.sub(lambda m: f"[value of ${{{names[m[0]]}}}]", text)
        return hide_url_secrets(text)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every string (keys too) scrubbed.

        Dataclasses, enums and times become what orjson would make of them; any other
        object its ``str``, as a JSON encoder's fallback would show it.
        """
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.data(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.data({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        if isinstance(value, enum.Enum):
            return self.data(value.value)
        if isinstance(value, datetime.date | datetime.time):
            return value.isoformat()
        return self.text(str(value))


def _encoded_forms(text: str) -> set[str]:
    """``text`` as it may appear: as it is, %-encoded in a request URL, or escaped
    in a Prometheus label value or a ``repr``."""
    # An environment value need not be UTF-8: its raw bytes are %-encoded then.
    options = {"encoding": "utf-8", "errors": "surrogateescape"}
    forms = {
        text,
        urllib.parse.quote(text, safe="", **options),
        urllib.parse.quote(text, **options),
        urllib.parse.quote_plus(text, **options),
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"),
    }
    return {f for f in forms if len(f) >= MIN_HIDDEN_CHARS}


#: The process's scrubber: the logs and the HTTP endpoint go through it.
output_scrubber = OutputScrubber()
