"""``chatcore export`` and ``chatcore import``: moving a deployment's sessions between stores
(from the embedded SQLite file to Redis when one process is not enough, or back).

    chatcore export [--output FILE|-]     every session of the configured store, as an archive
    chatcore import FILE                  an archive into the configured store

Both read the same settings as ``chatcore serve`` (``CHATCORE_*``, the config file), so the
store is the one ``serve`` would use: SQLite by default, Redis with ``CHATCORE_REDIS_URL``.
The archive's format and what each side promises are in :mod:`chatcore_adapters.archive`;
the storage families' own code in their ``archive`` modules. Here: settings, files, the
signing keys (never written to an archive: only their public ids) and what is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from chatcore.errors import PortError
from chatcore_adapters.archive import (
    ArchiveError,
    ArchiveInvalid,
    ArchiveReader,
    ExportSummary,
    ImportSummary,
    export_archive,
    import_archive,
    log_import,
    log_source,
)
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.llm.demo import DemoLLM
from chatcore_adapters.system import SystemClock
from chatcore_api.extras import missing_extras
from chatcore_api.settings import (
    SECRET_KEY_ENV,
    SECRET_KEY_FILE,
    SECRET_KEYS_ENV,
    ApiSettings,
    SettingsError,
    load_settings,
    stored_secret,
)
from chatcore_api.tokens import key_id

# How many session ids a summary names at most.
_NAMED = 10


def _say(text: str) -> None:
    print(f"chatcore: {text}", file=sys.stderr)  # noqa: T201 - CLI output


def _settings(args: argparse.Namespace, verb: str) -> ApiSettings | None:
    """The settings ``serve`` would use, or ``None`` after saying why they cannot be."""
    try:
        settings = load_settings(args.config, redis_url=args.redis_url)
    except SettingsError as exc:
        _say(str(exc))
        return None
    problems = missing_extras(settings, generates_replies=False)
    if settings.backend == "memory":
        problems.append(
            f"memory storage keeps nothing beyond one process: there is nothing to {verb} "
            "(set CHATCORE_STORAGE=sqlite, or CHATCORE_REDIS_URL)"
        )
    for problem in problems:
        _say(problem)
    if problems:
        return None
    from chatcore_api.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return settings


def key_ids(settings: ApiSettings) -> list[str]:
    """The public ids of the keys this deployment verifies tokens with, the signing one
    first; empty when it has none yet (SQLite storage before its first start). Never makes a
    key file."""
    if settings.secret_keys is not None:
        return [key_id(k.get_secret_value().encode("utf-8")) for k in settings.secret_keys]
    if settings.secret_key is not None:
        return [key_id(settings.secret_key.get_secret_value().encode("utf-8"))]
    path = settings.data_dir / SECRET_KEY_FILE
    if settings.backend == "sqlite" and path.exists():
        return [key_id(stored_secret(path))]
    return []


def _where(settings: ApiSettings) -> str:
    if settings.backend == "redis":
        return f"Redis {settings.redis_url_display}"
    return str(settings.database_path)


# --- export -----------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    settings = _settings(args, "export")
    if settings is None:
        return 2
    try:
        ids = key_ids(settings)
    except SettingsError as exc:
        _say(str(exc))
        return 2
    to_stdout = args.output in (None, "-")
    path = None if to_stdout else Path(args.output)
    try:
        out = sys.stdout.buffer if path is None else _new_private_file(path)
    except OSError as exc:
        _say(f"cannot write {path}: {exc.strerror}")
        return 2
    try:
        summary = asyncio.run(_export(settings, out, ids))
    except (PortError, OSError) as exc:
        _say(f"export failed: {getattr(exc, 'message', None) or exc}")
        if path is not None:
            out.close()
            path.unlink(missing_ok=True)  # (a half archive has no end line: never imported)
        return 1
    finally:
        if path is not None and not out.closed:
            out.close()
    shown = "standard output" if path is None else str(path)
    _say(
        f"exported {summary.sessions} sessions ({summary.events} events) from "
        f"{_where(settings)} to {shown}"
    )
    if settings.backend == "sqlite" and ids and settings.secret_key is None:
        _say(
            f"the tokens of these sessions are signed with the key in "
            f"{settings.data_dir / SECRET_KEY_FILE}: where you import them, set "
            f"{SECRET_KEY_ENV} to its content before serving (the archive holds no key)"
        )
    for session_id, why in summary.left_out[:_NAMED]:
        _say(f"left out session {session_id}: {why}")
    if summary.left_out:
        _say(f"{len(summary.left_out)} sessions left out: their logs do not read")
        return 1
    return 0


def _new_private_file(path: Path) -> IO[bytes]:
    """``path`` as a new file only its owner may read (an archive holds every chat)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


async def _export(settings: ApiSettings, out: IO[bytes], ids: list[str]) -> ExportSummary:
    clock = SystemClock()
    exported_at = datetime.now(UTC)
    if settings.backend == "sqlite":
        from chatcore_adapters.sqlite.archive import SqliteLogReader

        reader = SqliteLogReader.open(
            settings.database_path,
            clock=clock,
            retention=settings.retention.idle_ttl,
            busy_timeout=settings.sqlite.busy_timeout,
        )
        try:
            return await export_archive(
                out, reader, kind="sqlite", exported_at=exported_at, key_ids=ids
            )
        finally:
            await reader.close()
    chat = bootstrap(settings, clock=clock, llm=DemoLLM(), client_name="chatcore-export")
    try:
        return await export_archive(
            out, log_source(chat), kind=settings.backend, exported_at=exported_at, key_ids=ids
        )
    finally:
        await chat.aclose()


# --- import -----------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    settings = _settings(args, "import into")
    if settings is None:
        return 2
    path = Path(args.file)
    try:
        header = ArchiveReader(path).header()
        ours = key_ids(settings)
    except ArchiveError as exc:
        _say(f"{path}: {exc.message}")
        return 1
    except SettingsError as exc:
        _say(str(exc))
        return 2
    try:
        summary = asyncio.run(_import(settings, path))
    except ArchiveInvalid as exc:
        _say(f"{path} cannot be imported; nothing was written:")
        for problem in exc.problems:
            _say(f"  {problem.message}")
        return 1
    except ArchiveError as exc:  # (checked whole, then found wrong: it changed meanwhile)
        _say(
            f"{path} changed during the import: {exc.message}; the sessions before that line "
            "were imported (run the import again on a stable copy: they are left as they are)"
        )
        return 1
    except PortError as exc:
        _say(f"import into {_where(settings)} failed: {exc.message}")
        return 1
    _report(summary, settings)
    _check_keys(header.key_ids, ours)
    return 1 if summary.existing else 0


async def _import(settings: ApiSettings, path: Path) -> ImportSummary:
    chat = bootstrap(settings, llm=DemoLLM(), client_name="chatcore-import")
    try:
        return await import_archive(
            path, log_import(chat), clock=chat.clock, retention=settings.retention.idle_ttl
        )
    finally:
        await chat.aclose()


def _report(summary: ImportSummary, settings: ApiSettings) -> None:
    lines = [
        f"imported {summary.sessions} sessions ({summary.events} events) into {_where(settings)}",
        f"queued {summary.queued} turns awaiting an answer (a worker answers them)",
        f"skipped {summary.skipped}: {len(summary.existing)} already there, "
        f"{summary.expired} older than the retention time",
    ]
    if summary.resumed:
        lines.append(f"finished {summary.resumed} sessions an interrupted import had written")
    for line in lines:
        print(line)  # noqa: T201 - CLI output
    for session_id in summary.existing[:_NAMED]:
        _say(f"session {session_id} is already there: not imported (nothing written for it)")
    if len(summary.existing) > _NAMED:
        _say(f"... and {len(summary.existing) - _NAMED} more already there")


def _check_keys(theirs: list[str], ours: list[str]) -> None:
    """Warn when the exported deployment's tokens would not verify here (clients would start
    new sessions instead of finding theirs)."""
    if not theirs or theirs[0] in ours:
        return
    _say(
        f"warning: the exported deployment signs tokens with key {theirs[0]}, which this one "
        f"does not verify with: its clients would start new sessions. Before serving, set "
        f"{SECRET_KEY_ENV} to that deployment's key (with SQLite storage and no "
        f"{SECRET_KEY_ENV}: the content of the file {SECRET_KEY_FILE} in its data directory), "
        f"or add it to {SECRET_KEYS_ENV}"
    )
