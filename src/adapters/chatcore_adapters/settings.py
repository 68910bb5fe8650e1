"""The settings of a running chatcore: where it stores, which model answers, how its workers
work. Declared once, here and in the core's own settings models (``WorkerSettings``,
``GenerationSettings``), and read by every entry point through
:func:`chatcore_adapters.bootstrap.bootstrap`: the bundled API (whose
``chatcore_api.settings.ApiSettings`` adds what only a server needs and reads all of it from
``CHATCORE_*`` variables and a config file), the worker processes, the test harness and library
code, which builds these models directly.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from chatcore.decisions import CommandLimits
from chatcore.generation import GenerationSettings
from chatcore.service import ServiceSettings
from chatcore.worker import WorkerSettings
from chatcore_adapters.llm.settings import LLMSettings

_DEFAULT_LIMITS = CommandLimits()
_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)
_DEFAULT_SERVICE = ServiceSettings()


class WorkerOptions(WorkerSettings, GenerationSettings):
    """A worker: the loop's and the replies' settings, plus what a worker process needs."""

    enabled: bool = Field(
        default=True,
        description="Run a reply worker inside `chatcore serve` (turn off when `chatcore worker` "
        "processes do the work).",
    )
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="Seconds replies in flight may take to finish when the process stops; "
        "what is left is taken over by another worker.",
    )
    near_cache_events: int = Field(
        default=50_000,
        ge=0,
        le=10_000_000,
        description="A `chatcore worker` process keeps the views of the sessions it answered "
        "last, up to this many events in all, so answering a session again reads only the "
        "events since (not the whole cached view from Redis); 0 turns it off.",
    )
    llm_factory: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="`package.module:callable` returning a chatcore.ports.LLM, used by "
        "`chatcore worker` and the in-process worker instead of the llm settings (a model of "
        "your own).",
    )
    forget_consumers_after: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="Seconds after which the consumer of a crashed worker (nothing pending) is "
        "removed from the Redis consumer group.",
    )
    prune_interval: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Seconds between two looks for such consumers.",
    )


class RedisOptions(BaseModel):
    """How chatcore uses Redis (when ``redis_url`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str = Field(
        default="", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$", description="Key prefix."
    )
    cluster: bool = Field(default=False, description="redis_url names a Redis Cluster node.")
    max_connections: int = Field(default=32, ge=2, le=10_000)
    reclaim_after: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a claimed reply may go without news before another worker takes it.",
    )
    queue_shards: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Streams the work queue is spread over (in different slots). On a Redis "
        "Cluster, a multiple of the number of masters spreads the workers' claims and acks over "
        "all of them; on one server, 1. Change it only with the queue drained.",
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Durable writes for a Redis with replicas (a Cluster): an accepted message, "
        "a reply's events and a queued work item are acknowledged (and pushed to clients) only "
        "once this many replicas have them (WAIT), so a master's failover loses none of them. "
        "0: do not wait (a failover may lose the last writes).",
    )
    wait_timeout: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds a durable write waits for its replicas before it fails (the "
        "client retries; the write may still stand).",
    )
    cache_ttl: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="Seconds a session's cached view is kept after its last use.",
    )


def default_data_dir() -> Path:
    """Where the embedded mode keeps its data unless told: ``$XDG_DATA_HOME/chatcore``, by
    default ``~/.local/share/chatcore``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chatcore"


class SqliteOptions(BaseModel):
    """How chatcore uses its SQLite file (``storage = "sqlite"``, the embedded default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: an answered write survives a crash of the process (kill -9); "
        "full: a power loss too, at the cost of an fsync per transaction.",
    )
    busy_timeout: float = Field(
        default=5.0, ge=0, le=600, description="Seconds a write waits for a lock."
    )
    max_bytes: int | None = Field(
        default=None,
        ge=65_536,
        description="A cap on the file's size: a write past it fails (none but the disk's).",
    )


Storage = Literal["memory", "sqlite", "redis"]


class RetentionOptions(BaseModel):
    """How long sessions are kept and how large their logs may grow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_ttl: float | None = Field(
        default=30 * 86_400.0,
        ge=1,
        le=3650 * 86_400,
        description="Seconds (or an ISO 8601 duration such as P30D) after a session's last "
        "event before the whole session is deleted by itself (a client connecting records an "
        "event at most once per restore_record_interval, so a session in use stays). At least "
        "the API's token_ttl. null (or never): sessions are never deleted by age.",
    )
    max_events: int = Field(
        default=_DEFAULT_LIMITS.max_events,
        ge=10,
        le=100_000_000,
        description="Most events a session's log may hold. A reply that reaches it ends with "
        "reply_failed (session_full).",
    )
    reply_reserve: int = Field(
        default=_DEFAULT_LIMITS.reply_reserve,
        ge=0,
        le=100_000_000,
        description="Events kept free below max_events for replies in progress: a new message "
        "(or any other command that grows the log) is refused with session_full once fewer "
        "are left.",
    )

    @field_validator("idle_ttl", mode="before")
    @classmethod
    def _idle_ttl_from_text(cls, value: Any) -> Any:
        """Seconds, an ISO 8601 duration (``P30D``), or null/none/never (an environment
        variable cannot say null otherwise)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in {"", "null", "none", "never"}:
            return None
        try:
            return float(text)
        except ValueError:
            return _DURATION.validate_python(text).total_seconds()

    @model_validator(mode="after")
    def _reserve_below_the_cap(self) -> RetentionOptions:
        if self.reply_reserve >= self.max_events:
            raise ValueError("retention.reply_reserve must be less than retention.max_events")
        return self


class ChatcoreSettings(BaseModel):
    """Everything :func:`~chatcore_adapters.bootstrap.bootstrap` builds a chatcore from."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # What ``storage`` is when neither it nor ``redis_url`` is given: memory for library code
    # and tests; the bundled server's settings make it sqlite.
    default_storage: ClassVar[Storage] = "memory"

    storage: Storage | None = Field(
        default=None,
        description="Where sessions live: memory (this process, gone when it stops), sqlite "
        "(a file in data_dir, one process), redis (shared by any number of processes). "
        "Unset: redis when redis_url is set, else the embedded default.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the embedded mode keeps its database (chatcore.db) and, unless "
        "CHATCORE_SECRET_KEY is set, its token signing key (secret_key, mode 0600).",
    )
    sqlite: SqliteOptions = Field(default_factory=SqliteOptions)
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://, rediss:// or unix:// URL: sessions and work in Redis, shared "
        "by every API and worker process.",
    )
    redis: RedisOptions = Field(default_factory=RedisOptions)
    worker: WorkerOptions = Field(default_factory=WorkerOptions)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retention: RetentionOptions = Field(default_factory=RetentionOptions)
    max_message_chars: int = Field(
        default=_DEFAULT_LIMITS.max_message_chars,
        ge=1,
        le=1_000_000,
        description="Longest user message, in characters.",
    )
    restore_record_interval: float = Field(
        default=_DEFAULT_SERVICE.restore_record_interval,
        ge=0,
        le=86_400,
        description="A session records a session_restored event when a client connects, at "
        "most once per this many seconds (0: on every connection).",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url_valid(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _keepalive_within_timeouts(self) -> ChatcoreSettings:
        # A reply renews its lease and touches its delivery every keepalive_interval; if that
        # is not well inside both timeouts, a live worker's reply is taken over as if dead.
        limit = min(self.worker.lease_ttl, self.redis.reclaim_after)
        if self.worker.keepalive_interval * 2 > limit:
            raise ValueError(
                f"worker.keepalive_interval ({self.worker.keepalive_interval:g}s) must be at most "
                f"half of worker.lease_ttl and of redis.reclaim_after ({limit:g}s)"
            )
        return self

    @model_validator(mode="after")
    def _storage_fits_redis_url(self) -> ChatcoreSettings:
        if self.storage == "redis" and self.redis_url is None:
            raise ValueError("storage is redis but redis_url is not set")
        if self.storage in ("memory", "sqlite") and self.redis_url is not None:
            raise ValueError(
                f"storage is {self.storage} but redis_url is set: say which (unset one)"
            )
        return self

    @property
    def backend(self) -> Storage:
        """The storage in use (``storage``, or what its default resolves to)."""
        if self.storage is not None:
            return self.storage
        return "redis" if self.redis_url is not None else self.default_storage

    @property
    def database_path(self) -> Path:
        """The SQLite file of the embedded mode."""
        return self.data_dir / "chatcore.db"

    @property
    def service_settings(self) -> ServiceSettings:
        """The use cases' settings (the ones these settings name; the others keep the core's
        defaults)."""
        return ServiceSettings(
            limits=CommandLimits(
                max_message_chars=self.max_message_chars,
                max_events=self.retention.max_events,
                reply_reserve=self.retention.reply_reserve,
            ),
            restore_record_interval=self.restore_record_interval,
        )

    @property
    def cache_ttl(self) -> float:
        """How long a cached view lives: never longer than the session itself."""
        idle = self.retention.idle_ttl
        return self.redis.cache_ttl if idle is None else min(self.redis.cache_ttl, idle)

    @property
    def redis_url_display(self) -> str | None:
        """The Redis URL with any password masked, for logs."""
        if self.redis_url is None:
            return None
        parts = urlsplit(self.redis_url.get_secret_value())
        if parts.password is None:
            return parts.geturl()
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{netloc}").geturl()
