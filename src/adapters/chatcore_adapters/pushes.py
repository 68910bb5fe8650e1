"""What a live subscription does with a push, whatever its transport: keep it for ``receive()``,
or hand it to the listener set with ``listen()``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chatcore.ports import Appended

log = logging.getLogger(__name__)

Listener = Callable[[Appended], None]


def hand_over(
    appended: Appended, listener: Listener | None, received: list[Appended], wake: asyncio.Event
) -> None:
    """Without a listener, keep ``appended`` in ``received`` and set ``wake``. With one, call
    it; an exception it raises is logged and only this push is lost: the caller (a reader
    task, an append) carries on, and the session's next push reveals the gap."""
    if listener is None:
        received.append(appended)
        wake.set()
        return
    try:
        listener(appended)
    except Exception:
        log.exception("live listener failed", extra={"session_id": appended.session_id})
