"""The daemon's own logs: JSON lines on stderr, for journald and ``kubectl logs``."""

from __future__ import annotations

__all__ = ["JsonLineFormatter", "ThrottledLog", "setup_logging"]

import json
import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any

import orjson

from shipper.redact_output import OutputScrubber, output_scrubber

# Attributes every LogRecord has; anything else came in through ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record. Every field goes through ``scrubber`` first: the
    text of a library's exception may hold a URL's credentials, and a key or a path
    a value expanded from the environment."""

    def __init__(self, scrubber: OutputScrubber = output_scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        data = self.scrubber.data(data)
        try:
            return orjson.dumps(data, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            # e.g. a file name that is not UTF-8: escape it rather than lose the line.
            return json.dumps(data, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # boto's debug chatter would bury our lines and can echo request details.
    for noisy in ("botocore", "boto3", "urllib3", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class ThrottledLog:
    """Logs a repeated warning at most once per interval, with how many were held back."""

    def __init__(
        self, logger: logging.Logger, *, interval_secs: float, level: int = logging.WARNING
    ) -> None:
        self.logger = logger
        self.interval_secs = interval_secs
        self.level = level
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, message: str, **fields: Any) -> None:
        now = time.monotonic()
        last = self._last.get(message)
        if last is not None and now - last < self.interval_secs:
            self._suppressed[message] = self._suppressed.get(message, 0) + 1
            return
        self._last[message] = now
        suppressed = self._suppressed.pop(message, 0)
        self.logger.log(self.level, message, extra={**fields, "suppressed_since_last": suppressed})
