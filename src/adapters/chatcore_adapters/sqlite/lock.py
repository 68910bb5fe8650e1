"""One process per data directory: an exclusive lock on ``<data_dir>/chatcore.lock``.

The SQLite adapters push an append only to the subscriptions of the process that made it,
and their work queue assumes the claims of a process that is gone belong to nobody; a second
process writing the same file would break both quietly. So the embedded mode takes this lock
when it opens its data directory, and a second ``chatcore serve`` on the same directory stops
at start-up with a message saying why (and that Redis is the way to run several processes).
The operating system releases the lock when the process dies, however it dies.
"""

from __future__ import annotations

import os
from pathlib import Path

from chatcore_adapters.sqlite.errors import DatabaseUnusable

try:
    import fcntl
except ImportError:  # (not on Windows: no lock there, the rule stays a documented one)
    fcntl = None  # type: ignore[assignment]


class DataDirLock:
    """The lock of one data directory, held until :meth:`release` (or the process ends)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "chatcore.lock"
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DatabaseUnusable(
                self.path, f"cannot create its lock file: {exc.strerror}"
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise DatabaseUnusable(
                    self.path.parent / "chatcore.db",
                    "another chatcore process is using its data directory (the embedded mode "
                    "runs one process per data directory; for several, use Redis: "
                    "CHATCORE_REDIS_URL)",
                ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # (closing releases the lock)
