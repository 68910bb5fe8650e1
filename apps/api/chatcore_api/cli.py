"""The ``chatcore`` command.

    chatcore serve   [--host H] [--port P] [--config FILE] [--redis-url URL] [--no-worker]
                     [--workers N]
    chatcore worker  [--config FILE] [--processes N] [--check [--json]] [tuning flags]
    chatcore schema  [--out docs/protocol] [--check]
    chatcore export  [--config FILE] [--redis-url URL] [--output FILE|-]
    chatcore import  [--config FILE] [--redis-url URL] FILE

``serve`` with no options is the embedded default: everything in this process (in-memory
storage, a reply worker, the offline demo model) and the web client at ``/``, on
http://127.0.0.1:8000. Settings also come from ``CHATCORE_*`` variables and a config file.
``export`` and ``import`` move every session from one store to another (SQLite to Redis when
one process is no longer enough): see ``chatcore_api.moving``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from chatcore_api.extras import missing_extras
from chatcore_api.settings import ApiSettings, SettingsError, load_settings, signing_keys
from chatcore_api.worker_main import add_worker_arguments

DEFAULT_SCHEMA_DIR = Path("docs/protocol")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say where the settings, and so the store, come from."""
    parser.add_argument(
        "--config", type=Path, help="TOML or JSON settings file (default: $CHATCORE_CONFIG)"
    )
    parser.add_argument(
        "--redis-url",
        help="use Redis (prefer CHATCORE_REDIS_URL: a password here shows in the process list)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatcore", description="chatcore: real-time AI chat server and tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the API, the /ws protocol server and the web client",
        description="Run the API server. Without Redis everything runs in this process.",
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    add_store_arguments(serve)
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="do not generate replies in this process (`chatcore worker` processes do)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="also run N `chatcore worker` processes beside the API, restarted if one dies "
        "(needs Redis; replaces the in-process worker)",
    )

    worker = commands.add_parser(
        "worker",
        help="run reply workers as processes (needs Redis), or check on them",
        description="Generate replies from the shared work queue on Redis. Stops gracefully "
        "on SIGTERM/SIGINT: in-flight replies finish within the grace period or are handed "
        "back to other workers.",
    )
    add_worker_arguments(worker)

    schema = commands.add_parser(
        "schema",
        help="write the JSON Schemas of the protocol's frames",
        description="Write the JSON Schema of every client and server frame of protocol v1.",
    )
    schema.add_argument("--out", type=Path, default=DEFAULT_SCHEMA_DIR)
    schema.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail if the files under --out are not up to date",
    )

    export = commands.add_parser(
        "export",
        help="write every session of the configured store to an archive",
        description="Write every session of the store `chatcore serve` uses (the SQLite file "
        "of CHATCORE_DATA_DIR, or Redis with CHATCORE_REDIS_URL) to an archive: JSON lines, "
        "each session's events at their positions. Works while the server runs (each session "
        "is read as of one moment); stop it first for an archive of one moment. The archive "
        "holds every chat (a new file is made readable by its owner only) and no key.",
    )
    add_store_arguments(export)
    export.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="a new file to write (default -, standard output)",
    )

    import_ = commands.add_parser(
        "import",
        help="write an archive's sessions into the configured store",
        description="Write the sessions of an archive made by `chatcore export` into the store "
        "`chatcore serve` uses, at the same positions (clients' cursors stay valid), and queue "
        "an answer to every message still awaiting one. The whole archive is checked first; "
        "nothing is written if a line is wrong. A session the store already has is left as it "
        "is (exit status 1). Tokens keep working only if the new deployment has the old one's "
        "key (CHATCORE_SECRET_KEY; with SQLite, the data directory's secret_key file).",
    )
    add_store_arguments(import_)
    import_.add_argument("file", metavar="FILE", help="the archive")
    return parser


def _serve_settings(args: argparse.Namespace) -> ApiSettings:
    settings = load_settings(args.config, host=args.host, port=args.port, redis_url=args.redis_url)
    if args.no_worker or args.workers:
        worker = settings.worker.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={"worker": worker})
    return settings


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = _serve_settings(args)
    except SettingsError as exc:
        print(f"chatcore: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    missing = missing_extras(settings, generates_replies=settings.worker.enabled)
    missing += embedded_problems(settings, args)
    for problem in missing:
        print(f"chatcore: {problem}", file=sys.stderr)  # noqa: T201 - CLI output
    if missing:
        return 2

    from chatcore_api.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    if args.workers is not None:
        from chatcore_api.worker_main import serve_with_workers

        return serve_with_workers(args, settings, lambda: _serve_app(settings))
    return _serve_app(settings)


def embedded_problems(settings: ApiSettings, args: argparse.Namespace) -> list[str]:
    """What the embedded storage cannot do, said before anything starts: worker processes
    beside the API (they share work through Redis), an API without its in-process worker
    (nothing else would answer), and a data directory that cannot be used (another process
    holds it, the database is damaged or newer than this chatcore, a file cannot be
    written)."""
    if settings.backend == "redis":
        return []
    problems = []
    if args.workers is not None:
        problems.append(
            f"--workers needs Redis (CHATCORE_REDIS_URL): worker processes share their work "
            f"through it, and {settings.backend} storage lives in one process"
        )
    elif args.no_worker:
        problems.append(
            f"--no-worker needs Redis (CHATCORE_REDIS_URL): with {settings.backend} storage, "
            "the API's own worker is the only one that can answer"
        )
    if settings.backend == "sqlite" and not problems:
        problems += _sqlite_problems(settings)
    return problems


def _sqlite_problems(settings: ApiSettings) -> list[str]:
    """Open the data directory and its database once (then close them) to check them."""
    from chatcore.errors import PortError
    from chatcore_adapters.sqlite import DataDirLock, SqliteDatabase

    try:
        lock = DataDirLock(settings.data_dir).acquire()
    except PortError as exc:
        return [exc.message]
    try:
        db = SqliteDatabase.open(settings.database_path)
        asyncio.run(db.close())
    except PortError as exc:
        return [exc.message]
    finally:
        lock.release()
    try:
        signing_keys(settings)
    except SettingsError as exc:
        return [str(exc)]
    return []


def _serve_app(settings: ApiSettings) -> int:
    from chatcore_api.app import create_app
    from chatcore_api.gc_tuning import freeze_startup_heap
    from chatcore_api.server import ChatServer, server_config

    app = create_app(settings)
    server = ChatServer(server_config(app, settings), app)
    freeze_startup_heap()
    mode = {
        "memory": "embedded: in-memory storage, sessions last until this process stops",
        "sqlite": f"embedded: sessions kept in {settings.database_path}",
        "redis": f"redis: {settings.redis_url_display}",
    }[settings.backend]
    print(  # noqa: T201 - CLI output
        f"chatcore: serving on http://{settings.host}:{settings.port} ({mode})", flush=True
    )
    server.run()
    return 0 if server.started else 1


def _schema(args: argparse.Namespace) -> int:
    from chatcore_api.schema import stale_schemas, write_schemas

    if args.check:
        stale = stale_schemas(args.out)
        for name in stale:
            print(f"out of date: {args.out / name}", file=sys.stderr)  # noqa: T201
        if stale:
            print("run: chatcore schema --out " + str(args.out), file=sys.stderr)  # noqa: T201
        return 1 if stale else 0
    for path in write_schemas(args.out):
        print(path)  # noqa: T201 - CLI output
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "worker":
        from chatcore_api.worker_main import run_worker_command

        return run_worker_command(args)
    if args.command in ("export", "import"):
        from chatcore_api.moving import run_export, run_import

        return run_export(args) if args.command == "export" else run_import(args)
    return _schema(args)
