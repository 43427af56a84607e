"""The state database: where each known file resumes, and what of it is delivered.

One SQLite database in WAL mode, ``state_dir/state.db``, with a row per *file*,
never per object:

- ``checkpoints``: where a known file resumes, with its content markers and
  ``finished`` mark (fingerprint id -> the checkpoint's JSON);
- ``shipped``: the byte ranges of a file delivered to the store, merged, and the
  marker of the furthest delivered end (what retention proves a deletion by);
- ``meta``: the schema version and running totals of delivered objects and records.

A file's deliveries merge into its ranges, and both of its rows go in one
transaction when it is forgotten (gone for ``checkpoint_grace_secs``). So the
file, its read at start-up and every save are bounded by the files alive now,
not by how many objects were ever shipped. Which object holds which lines is in
the object's own metadata in the store.

Methods block on disk I/O (each write transaction ends with an fsync of the
write-ahead log): call them from a thread. One connection, shared by the
upload threads and the checkpoint saver under a lock.
"""

from __future__ import annotations

__all__ = ["STATE_DB_NAME", "StateDB", "StoredState", "Totals", "read_state", "read_totals"]

import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipper.errors import StateError
from shipper.state.delivered import ShippedFile
from shipper.tail.checkpoints import Checkpoint

STATE_DB_NAME = "state.db"
SCHEMA_VERSION = 1
WAL_SIZE_LIMIT_BYTES = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS checkpoints (fid TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS shipped (fid TEXT PRIMARY KEY, doc BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Totals:
    """Everything delivered since the state directory was made: counters, not a list."""

    #: Objects written by a put of ours.
    stored: int = 0
    #: Objects the store already held (412): a put sent again after a crash.
    already_present: int = 0
    records: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(_fields(self), _fields(other), strict=True)))


def _fields(totals: Totals) -> tuple[int, int, int]:
    return (totals.stored, totals.already_present, totals.records)


_TOTAL_KEYS = ("stored", "already_present", "records")


@dataclass(slots=True)
class StoredState:
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    shipped: list[ShippedFile] = field(default_factory=list)
    #: Rows that could not be read (named in the log by the caller), skipped.
    unreadable: list[str] = field(default_factory=list)


class StateDB:
    """Owns ``state_dir/state.db`` (and SQLite's ``-wal`` and ``-shm`` beside it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ opening

    def open(self) -> None:
        """Open (or create, mode 0600) the database and its schema."""
        _create_private(self.path)
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            # Pages freed by forgotten files go back to the filesystem (set before the
            # tables exist; a no-op on a database that has them).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            # The log is emptied at each checkpoint; this caps what it keeps on disk.
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            # FULL: a commit is on disk when it returns. Deliveries rely on it: the
            # spool entry is removed right after.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif version[0] != SCHEMA_VERSION:
                db.close()
                raise StateError(
                    f"{self.path}: state schema version {version[0]!r}; this release reads"
                    f" {SCHEMA_VERSION} (written by a newer shipper?)"
                )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc
        self._db = db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def is_empty(self) -> bool:
        with self._lock:
            db = self._conn()
            return all(
                db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
                for table in ("checkpoints", "shipped")
            )

    # ------------------------------------------------------------------ reading

    def load(self) -> StoredState:
        """Every row: the files alive now and those gone for less than the grace."""
        with self._lock:
            return _load(self._conn())

    def totals(self) -> Totals:
        with self._lock:
            return _totals(self._conn())

    # ------------------------------------------------------------------ writing

    def save_checkpoints(self, changed: Iterable[Checkpoint], forgotten: Iterable[str]) -> None:
        """Write the checkpoints that changed; drop forgotten files, delivered ranges too."""
        self.save_checkpoint_rows(
            ((c.fingerprint.id, orjson.dumps(c.to_json())) for c in changed), forgotten
        )

    def save_checkpoint_rows(
        self, rows: Iterable[tuple[str, bytes]], forgotten: Iterable[str]
    ) -> None:
        """:meth:`save_checkpoints`, given each checkpoint's ``to_json()`` encoded (taken
        where the checkpoints change: a snapshot), by fingerprint id."""
        gone = [(fid,) for fid in forgotten]
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO checkpoints VALUES (?, ?)", rows)
            db.executemany("DELETE FROM checkpoints WHERE fid = ?", gone)
            db.executemany("DELETE FROM shipped WHERE fid = ?", gone)
        if gone:
            # Give the freed pages back to the filesystem: the file shrinks with the
            # files alive. (A script, since the pragma frees one page per step.)
            with self._lock:
                try:
                    self._conn().executescript("PRAGMA incremental_vacuum;")
                except sqlite3.Error as exc:
                    raise OSError(f"{self.path}: {exc}") from exc

    def record_delivery(self, files: Iterable[ShippedFile], delivered: Totals) -> None:
        """A delivered object: its files' merged ranges, and the totals, durably."""
        rows = [(f.fingerprint.id, orjson.dumps(f.to_json())) for f in files]
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO shipped VALUES (?, ?)", rows)
            _add_totals(db, delivered)

    def replace_all(
        self, checkpoints: Iterable[Checkpoint], shipped: Iterable[ShippedFile], totals: Totals
    ) -> None:
        """One transaction holding the whole state (a migration from the older files)."""
        with self._transaction() as db:
            db.execute("DELETE FROM checkpoints")
            db.execute("DELETE FROM shipped")
            db.executemany(
                "INSERT INTO checkpoints VALUES (?, ?)",
                ((c.fingerprint.id, orjson.dumps(c.to_json())) for c in checkpoints),
            )
            db.executemany(
                "INSERT INTO shipped VALUES (?, ?)",
                ((f.fingerprint.id, orjson.dumps(f.to_json())) for f in shipped),
            )
            db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in _TOTAL_KEYS])
            _add_totals(db, totals)

    # ------------------------------------------------------------------ helpers

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError(f"{self.path}: not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    # Our own disk (full, failing): handled, and retried, as any local I/O error.
                    raise OSError(f"{self.path}: {exc}") from exc
                raise


def _add_totals(db: sqlite3.Connection, totals: Totals) -> None:
    db.executemany(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
        [(key, n, n) for key, n in zip(_TOTAL_KEYS, _fields(totals), strict=True) if n],
    )


def _totals(db: sqlite3.Connection) -> Totals:
    values: dict[str, Any] = dict(db.execute("SELECT key, value FROM meta").fetchall())
    return Totals(*(int(values.get(key, 0)) for key in _TOTAL_KEYS))


def _load(db: sqlite3.Connection) -> StoredState:
    state = StoredState()
    for fid, doc in db.execute("SELECT fid, doc FROM checkpoints"):
        try:
            state.checkpoints[fid] = Checkpoint.from_json(orjson.loads(doc))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            state.unreadable.append(f"checkpoints[{fid}]: {exc}")
    for fid, doc in db.execute("SELECT fid, doc FROM shipped"):
        try:
            state.shipped.append(ShippedFile.from_json(orjson.loads(doc)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            state.unreadable.append(f"shipped[{fid}]: {exc}")
    return state


def read_totals(state_dir: Path) -> Totals:
    """Totals delivered, read beside a running daemon (nothing is written)."""
    with _read_only(state_dir / STATE_DB_NAME) as db:
        return Totals() if db is None else _totals(db)


def read_state(state_dir: Path) -> StoredState:
    """The saved checkpoints and delivered ranges, read beside a running daemon."""
    with _read_only(state_dir / STATE_DB_NAME) as db:
        return StoredState() if db is None else _load(db)


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection | None]:
    if not path.exists():
        yield None
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise StateError(f"{path}: {exc}") from exc
    try:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        # Created a moment ago, its tables not yet: as good as no state at all.
        yield db if {"meta", "checkpoints", "shipped"} <= tables else None
    except sqlite3.Error as exc:
        raise StateError(f"{path}: {exc}") from exc
    finally:
        db.close()


def _create_private(path: Path) -> None:
    """Create the database file 0600 (SQLite gives ``-wal``/``-shm`` the same mode),
    and refuse a symlink or anything but a regular file in its place."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(f"{path}: {exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError(f"{path}: not a regular file")
    finally:
        os.close(fd)
