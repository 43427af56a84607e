"""Write JSON log lines the way our users' applications do: ``logging`` + a JSON formatter.

Run as a script::

    python tests/support/writer.py --path app.log --start-seq 0 --count 1000 \
        [--rate 500] [--handler file|rotating --max-bytes N --backup-count K] [--pad 0]

Every record carries a unique integer ``seq`` (``start_seq .. start_seq+count-1``) as a
``logging`` ``extra`` field. The script flushes, closes the handler and exits 0.
"""

from __future__ import annotations

__all__ = ["JsonFormatter", "build_handler", "main", "write_lines"]

import argparse
import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit "
# Bursts per second when pacing: one sleep per burst, not per line.
_BURSTS_PER_S = 50


class JsonFormatter(logging.Formatter):
    """The JSON formatter of the users' guide, ``extra`` fields included."""

    def format(self, record: logging.LogRecord) -> str:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        log_data = {
            "timestamp": now.isoformat() + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.thread,
            "thread_name": record.threadName,
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in log_data:
                log_data[key] = value
        return json.dumps(log_data)


def build_handler(
    path: Path, handler: str, max_bytes: int = 0, backup_count: int = 0
) -> logging.Handler:
    if handler == "file":
        return logging.FileHandler(path, mode="a", encoding="utf-8")
    if handler == "rotating":
        if max_bytes <= 0 or backup_count <= 0:
            raise ValueError("--handler rotating needs --max-bytes > 0 and --backup-count > 0")
        return logging.handlers.RotatingFileHandler(
            path, mode="a", maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
    if handler == "watched":
        # Reopens its file when logrotate has moved it (the "create" style).
        return logging.handlers.WatchedFileHandler(path, mode="a", encoding="utf-8")
    if handler == "timed":
        # A new file every second, older ones renamed with a date suffix.
        return logging.handlers.TimedRotatingFileHandler(
            path, when="S", interval=1, backupCount=backup_count, encoding="utf-8"
        )
    raise ValueError(f"unknown handler {handler!r}")


def _reraise(record: logging.LogRecord) -> None:
    raise  # noqa: PLE0704 - called by Handler.emit from inside its ``except``


def _level(seq: int) -> int:
    if seq % 101 == 0:
        return logging.ERROR
    if seq % 13 == 0:
        return logging.WARNING
    return logging.INFO


def _message(seq: int, pad: int) -> str:
    text = f'handled request {seq} path="/api/v1/items/{seq % 97}" status=200'
    if pad > 0:
        reps = pad // len(_FILLER) + 1
        text += " " + (_FILLER * reps)[:pad]
    return text


def write_lines(
    path: Path,
    start_seq: int,
    count: int,
    *,
    rate: float = 0,
    handler: str = "file",
    max_bytes: int = 0,
    backup_count: int = 0,
    pad: int = 0,
    unlink_after: int = -1,
) -> None:
    """Log ``count`` records with seq ``start_seq``..; ``rate`` lines/s (0: as fast as possible)."""
    log_handler = build_handler(Path(path), handler, max_bytes, backup_count)
    log_handler.setFormatter(JsonFormatter())
    # logging would print a write error and carry on; a test writer must fail instead.
    setattr(log_handler, "handleError", _reraise)  # noqa: B010
    # A Logger outside the global registry: importing and calling this twice stays clean.
    logger = logging.Logger("app.orders", logging.INFO)
    logger.propagate = False
    logger.addHandler(log_handler)
    burst = max(1, int(rate / _BURSTS_PER_S)) if rate > 0 else 0
    started = time.monotonic()
    try:
        for i in range(count):
            seq = start_seq + i
            logger.log(_level(seq), _message(seq, pad), extra={"seq": seq})
            if i + 1 == unlink_after:
                # Delete the file while it is open and go on writing into it.
                log_handler.flush()
                Path(path).unlink()
            if burst and (i + 1) % burst == 0:
                delay = started + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        log_handler.flush()
    finally:
        logger.removeHandler(log_handler)
        log_handler.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--path", type=Path, required=True)
    parser.add_argument("--start-seq", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0, help="lines per second; 0 = no limit")
    parser.add_argument(
        "--handler", choices=("file", "rotating", "timed", "watched"), default="file"
    )
    parser.add_argument("--unlink-after", type=int, default=-1, help="delete the file after N")
    parser.add_argument("--max-bytes", type=int, default=0)
    parser.add_argument("--backup-count", type=int, default=0)
    parser.add_argument("--pad", type=int, default=0, help="extra filler chars per message")
    args = parser.parse_args(argv)
    if args.count < 0 or args.rate < 0 or args.pad < 0:
        parser.error("--count, --rate and --pad must be >= 0")
    if args.handler == "rotating" and (args.max_bytes <= 0 or args.backup_count <= 0):
        parser.error("--handler rotating needs --max-bytes > 0 and --backup-count > 0")
    write_lines(
        args.path,
        args.start_seq,
        args.count,
        rate=args.rate,
        handler=args.handler,
        max_bytes=args.max_bytes,
        backup_count=args.backup_count,
        pad=args.pad,
        unlink_after=args.unlink_after,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
