"""What a live subscription does with a push, whatever its transport: hand it to the listener,
and never let the listener's failure reach the task that received the push."""

from __future__ import annotations

import logging

from chatcore.ports import Appended, AppendListener

log = logging.getLogger(__name__)


def hand_over(appended: Appended, listener: AppendListener) -> None:
    """Call ``listener``; an exception it raises is logged and only this push is lost: the
    caller (a reader task, an append) carries on, and the session's next push reveals the
    gap."""
    try:
        listener(appended)
    except Exception:
        log.exception("live listener failed", extra={"session_id": appended.session_id})
