"""Logging a session out everywhere: ``POST /api/sessions/{session_id}/tokens/revoke``.

Every token issued for the session so far is refused from then on (``unauthorized``), on every
API process: the session's log records a ``tokens_revoked`` event with a new token generation,
which each connection of the session receives live and answers by closing (error
``unauthorized``, close 4001). The caller gets a token of the new generation, so the one who
revokes keeps the session and everyone else (a copied token, a lost device) loses it; a caller
who wants nobody to keep it discards the answer.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from chatcore_api.rest import ERRORS, RuntimeDep, SessionDep

router = APIRouter(prefix="/api", tags=["sessions"], responses=ERRORS)


class NewToken(BaseModel):
    session_id: str
    token: str = Field(description="The session's only valid token from now on; keep it secret.")
    expires_at: datetime


@router.post("/sessions/{session_id}/tokens/revoke", response_model=NewToken)
async def revoke_tokens(session_id: SessionDep, runtime: RuntimeDep) -> NewToken:
    """Log the session out everywhere: every token issued before this call stops working, and
    open connections of the session are closed (4001). Answers with a new token."""
    issued = await runtime.sessions.revoke(session_id)
    return NewToken(session_id=session_id, token=issued.token, expires_at=issued.expires_at)
