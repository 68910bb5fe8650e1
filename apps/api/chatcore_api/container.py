"""The API's container: the chatcore :func:`~chatcore_adapters.bootstrap.bootstrap` builds
from the settings, and what only a server adds on top (tokens, the live feed, sockets, limits).

Nothing is built until it is first asked for (in the app's lifespan), so a test (or an
application embedding the API) may override any port at the edge right after ``create_app``::

    app = create_app(settings)
    app.state.container.llm.override(providers.Object(ScriptedLLM(delay=0.05)))

The port providers (``clock``, ``store``, ``cache``, ``queue``, ``intents``, ``leases``,
``heartbeats``, ``rate_limits``, ``llm``) give ``None`` unless overridden: bootstrap then
chooses from the settings. It imports the Redis adapters only when ``redis_url`` is set: they
need the ``redis`` extra, which an embedded install (``chatcore[server]``) does not have (the
commands check it first, see ``chatcore_api.extras``).
"""

from __future__ import annotations

import logging

from dependency_injector import containers, providers

from chatcore.ports import (
    LLM,
    Clock,
    EventStore,
    Heartbeats,
    IntentJournal,
    Leases,
    RateLimits,
    SessionCache,
    WorkQueue,
)
from chatcore.worker import WorkerLoop
from chatcore_adapters.bootstrap import Chatcore, bootstrap, new_worker_id
from chatcore_adapters.memory import MemoryRateLimits
from chatcore_api.client_address import ClientKeys
from chatcore_api.connection_caps import ConnectionCaps
from chatcore_api.connections import ConnectionManager
from chatcore_api.feed import SessionFeed
from chatcore_api.handler import ConnectionSettings
from chatcore_api.metrics import ApiMetrics
from chatcore_api.ratelimit import ApiLimits
from chatcore_api.sessions import SessionManager
from chatcore_api.settings import ApiSettings, signing_keys
from chatcore_api.tokens import TokenSigner

log = logging.getLogger(__name__)


def _core(
    settings: ApiSettings,
    clock: Clock | None,
    store: EventStore | None,
    cache: SessionCache | None,
    queue: WorkQueue | None,
    intents: IntentJournal | None,
    leases: Leases | None,
    heartbeats: Heartbeats | None,
    rate_limits: RateLimits | None,
    llm: LLM | None,
) -> Chatcore:
    # The API sends no blocking Redis command (its live feed is pushed over pub/sub): a short
    # block bound keeps the socket timeout, and so the detection of a dead connection, short.
    return bootstrap(
        settings,
        clock=clock,
        store=store,
        cache=cache,
        queue=queue,
        intents=intents,
        leases=leases,
        heartbeats=heartbeats,
        rate_limits=rate_limits,
        llm=llm,
        client_name="chatcore-api",
        max_block=2.0,
    )


def _worker(core: Chatcore) -> WorkerLoop:
    if core.settings.backend == "redis":
        return core.worker(new_worker_id("api"))  # one consumer among many processes'
    # The only process of its storage: under one name across restarts, its worker takes back
    # at once what it was answering when the process died (the queue's recover()), instead of
    # after the reclaim timeout.
    return core.worker("embedded")


def _token_signer(settings: ApiSettings, clock: Clock) -> TokenSigner:
    keys, generated = signing_keys(settings)
    if generated:
        log.warning(
            "no CHATCORE_SECRET_KEY set: using a random key for this process; sessions will "
            "not survive a restart"
        )
    signer = TokenSigner(keys, ttl=settings.token_ttl, clock=clock)
    if len(keys) > 1:
        log.info("token keys", extra={"signing": signer.key_ids[0], "verifying": signer.key_ids})
    return signer


def _connection_settings(settings: ApiSettings) -> ConnectionSettings:
    return ConnectionSettings(
        max_frame_bytes=settings.max_frame_bytes,
        max_message_chars=settings.max_message_chars,
        messages_per_minute=settings.messages_per_minute,
        hello_timeout=settings.hello_timeout,
        idle_timeout=settings.idle_timeout,
        send_queue_limit=settings.send_queue_limit,
        send_timeout=settings.send_timeout,
        max_replay_events=settings.max_replay_events,
    )


def _limits(settings: ApiSettings, core: Chatcore) -> ApiLimits:
    # Shared limits on the deployment's store; a connection's frames in this process.
    return ApiLimits(settings, shared=core.rate_limits, local=MemoryRateLimits(core.clock))


def _client_keys(tokens: TokenSigner) -> ClientKeys:
    return ClientKeys(tokens.address_key)


def _caps(settings: ApiSettings) -> ConnectionCaps:
    return ConnectionCaps(
        total=settings.max_connections,
        per_client=settings.max_connections_per_ip,
        per_session=settings.max_connections_per_session,
    )


def _feed(core: Chatcore, metrics: ApiMetrics) -> SessionFeed:
    feed = SessionFeed(core.store, metrics=metrics)
    # The feed folds every push of a followed session into its view: the use cases of this
    # process read those views without a round trip (chatcore.ports.CurrentViews).
    core.service.views = feed
    return feed


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=ApiSettings)

    # The ports, overridable at the edge (None: chosen by bootstrap from the settings).
    clock: providers.Object[Clock | None] = providers.Object(None)
    store: providers.Object[EventStore | None] = providers.Object(None)
    cache: providers.Object[SessionCache | None] = providers.Object(None)
    queue: providers.Object[WorkQueue | None] = providers.Object(None)
    intents: providers.Object[IntentJournal | None] = providers.Object(None)
    leases: providers.Object[Leases | None] = providers.Object(None)
    heartbeats: providers.Object[Heartbeats | None] = providers.Object(None)
    rate_limits: providers.Object[RateLimits | None] = providers.Object(None)
    llm: providers.Object[LLM | None] = providers.Object(None)

    core = providers.Singleton(
        _core,
        settings,
        clock=clock,
        store=store,
        cache=cache,
        queue=queue,
        intents=intents,
        leases=leases,
        heartbeats=heartbeats,
        rate_limits=rate_limits,
        llm=llm,
    )
    worker = providers.Singleton(_worker, core)

    metrics = providers.Singleton(ApiMetrics)
    tokens = providers.Singleton(_token_signer, settings, core.provided.clock)
    sessions = providers.Singleton(SessionManager, service=core.provided.service, tokens=tokens)
    feed = providers.Singleton(_feed, core, metrics)
    connections = providers.Singleton(ConnectionManager, feed, metrics)
    connection_settings = providers.Callable(_connection_settings, settings)
    limits = providers.Singleton(_limits, settings, core)
    client_keys = providers.Singleton(_client_keys, tokens)
    caps = providers.Singleton(_caps, settings)
