"""The server's limits, as settings (part of :class:`~chatcore_api.settings.ApiSettings`).

Where each is kept decides what N API processes enforce together:

* **shared** (the :class:`~chatcore.ports.RateLimits` of the deployment: Redis in Redis mode,
  this process's memory in the embedded mode): new sessions, messages and token budgets per
  client address, messages and new conversations per session, the total token budget. N
  processes enforce the limit one would.
* **per connection** (exact, in the process that holds the connection): frames of any type.
* **per process** (counted in each API process, so N processes admit N times as many):
  connections in all, per client address and per session.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class LimitSettings(BaseModel):
    """Rates (GCRA: ``*_per_minute`` on average, ``*_burst`` at once), budgets and caps."""

    # --- messages and budgets (shared) ------------------------------------------------------
    messages_per_minute: int = Field(
        default=20, ge=1, le=100_000, description="Messages a session may send a minute."
    )
    messages_burst: int = Field(
        default=5, ge=1, le=10_000, description="Messages a session may send at once."
    )
    ip_messages_per_minute: int = Field(
        default=60,
        ge=1,
        le=1_000_000,
        description="Messages a client address may send a minute, over all its sessions.",
    )
    ip_messages_burst: int = Field(
        default=15, ge=1, le=1_000_000, description="Messages a client address may send at once."
    )
    ip_tokens_per_minute: int = Field(
        default=60_000,
        ge=0,
        le=1_000_000_000,
        description="Model tokens (prompt + completion, as the worker reports them) a client "
        "address may spend a minute; a minute's worth may be spent at once. While it is spent, "
        "new messages are refused with budget_exceeded. 0: no budget.",
    )
    total_tokens_per_minute: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Model tokens the whole deployment may spend a minute (the same rules, "
        "over every client). 0: no budget.",
    )
    # --- sessions and conversations (shared) ------------------------------------------------
    sessions_per_minute: float = Field(
        default=60,
        gt=0,
        le=1_000_000,
        description="New sessions per client address a minute (a quarter of it at once).",
    )
    conversations_per_minute: int = Field(
        default=6,
        ge=1,
        le=100_000,
        description="Conversations a session may start a minute (start_conversation).",
    )
    conversations_burst: int = Field(
        default=10, ge=1, le=10_000, description="Conversations a session may start at once."
    )
    # --- frames (per connection) ------------------------------------------------------------
    frames_per_minute: int = Field(
        default=120,
        ge=1,
        le=1_000_000,
        description="Client frames of any type (ping included) one connection may send a "
        "minute; past it a frame is answered with rate_limited and not carried out.",
    )
    frames_burst: int = Field(
        default=30, ge=1, le=1_000_000, description="Client frames one connection may send at once."
    )
    # --- connections (per process) ----------------------------------------------------------
    max_connections: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="WebSocket connections one API process holds; past it a new one is closed "
        "with 1013 (try again later: a load balancer moves it elsewhere).",
    )
    max_connections_per_ip: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="WebSocket connections from one client address in one API process, "
        "before hello included; past it a new one is refused (too_many_connections, 1008).",
    )
    max_connections_per_session: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Authenticated connections of one session in one API process; past it a "
        "new one is refused (too_many_connections, 1008).",
    )
