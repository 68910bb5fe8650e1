"""What the SQLite adapters raise: the port errors of :mod:`chatcore.errors`, never an
exception of the ``sqlite3`` module.

Two kinds of failure:

* the file cannot be used at all (not a database, damaged, written by a newer chatcore, not
  writable): :class:`DatabaseUnusable` and its subclasses, raised when the database is opened
  (or, for damage found later, by the operation that found it). Trying again will not help;
  someone has to look at the file. The message names the file.
* an operation failed this time (the file is locked by another process beyond the busy
  timeout, the disk is full, an I/O error): :class:`chatcore.errors.StoreUnavailable`. The
  operation did not happen (a write's transaction was rolled back) and may be tried again.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from chatcore.errors import PortError, StoreUnavailable

log = logging.getLogger(__name__)

# Primary result codes (the low byte of an extended code), from sqlite3.h.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


class DatabaseUnusable(PortError):
    """The database file cannot be used: it is not a chatcore database, it is damaged, or it
    cannot be opened for writing. The message names the file and what is wrong."""

    code = "database_unusable"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"the database {path} cannot be used: {problem}")
        self.path = path


class CorruptDatabase(DatabaseUnusable):
    """The file is not an SQLite database, or SQLite found it damaged."""

    code = "database_corrupt"


class SchemaTooNew(DatabaseUnusable):
    """The file was written by a newer chatcore (its schema version is above this code's)."""

    code = "database_too_new"

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            path,
            f"its schema version is {found}, newer than {supported}, the newest this version "
            "of chatcore knows; run a newer chatcore, or restore a backup made by this one",
        )
        self.found = found
        self.supported = supported


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def error_name(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return name if isinstance(name, str) else type(exc).__name__


def translate(exc: sqlite3.Error, path: Path, operation: str) -> PortError:
    """The port error for a failed SQLite call, logged (the message stays short).

    Damage (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) is a :class:`CorruptDatabase`; everything
    else (busy, locked, full, read-only, I/O) a :class:`StoreUnavailable`."""
    log_failure(exc, path, operation)
    return port_error(exc, path, operation)


def log_failure(exc: sqlite3.Error, path: Path, operation: str) -> None:
    extra = {"op": operation, "error": error_name(exc), "detail": _detail(exc), "path": str(path)}
    log.warning("sqlite call failed", extra=extra)


def port_error(exc: sqlite3.Error, path: Path, operation: str) -> PortError:
    """:func:`translate` without the log line (one failed transaction, many callers)."""
    detail = _detail(exc)
    if primary_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return CorruptDatabase(path, f"SQLite reports damage during {operation}: {detail}")
    return StoreUnavailable(f"sqlite {operation} failed on {path}: {detail} ({error_name(exc)})")


def _detail(exc: sqlite3.Error) -> str:
    text = str(exc)
    return text.splitlines()[0][:120] if text else error_name(exc)
