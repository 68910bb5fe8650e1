"""A complete in-memory chatcore for use-case tests, built by the same
:func:`~chatcore_adapters.bootstrap.bootstrap` as every other entry point, with fast timings
and any port replaced at the edge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from chatcore.generation import GenerationSettings, ReplyGenerator
from chatcore.ports import LLM, EventStore, Heartbeats, Leases
from chatcore.service import ServiceSettings
from chatcore.view import SessionView
from chatcore.worker import WorkerLoop
from chatcore_adapters.bootstrap import Chatcore, bootstrap
from chatcore_adapters.memory import MemorySessionCache, MemoryWorkQueue
from chatcore_adapters.settings import ChatcoreSettings, WorkerOptions
from chatcore_adapters.system import SystemClock
from tests.support.scripted_llm import ScriptedLLM

FAST = GenerationSettings(
    flush_interval=0.005, cancel_poll_interval=0.05, lease_ttl=2.0, keepalive_interval=0.2
)
# The worker loop's timings in tests: claims, beats and sweeps every fraction of a second.
FAST_LOOP = {"claim_block": 0.1, "heartbeat_interval": 0.1, "sweep_interval": 0.2}


@dataclass
class Harness:
    llm: LLM = field(default_factory=ScriptedLLM)
    reclaim_after: float = 1.0
    generation: GenerationSettings = FAST
    service_settings: ServiceSettings = field(default_factory=ServiceSettings)
    # Ports to use instead of the plain in-memory ones (a fault-injecting subclass, say).
    with_queue: MemoryWorkQueue | None = None
    with_leases: Leases | None = None
    with_heartbeats: Heartbeats | None = None
    with_store: EventStore | None = None
    with_cache: MemorySessionCache | None = None
    # False: messages are recorded and queued in two steps bracketed by an intent (what a
    # Redis Cluster does), instead of in one step through the memory intake.
    use_intake: bool = True

    def __post_init__(self) -> None:
        clock = SystemClock()
        # A reclaim timeout shorter than the settings allow, for takeovers within a test.
        self.queue = self.with_queue or MemoryWorkQueue(clock, reclaim_after=self.reclaim_after)
        self.cache = self.with_cache or MemorySessionCache(clock)  # (tests write raw entries)
        settings = ChatcoreSettings(
            worker=WorkerOptions(**{**self.generation.model_dump(), **FAST_LOOP})
        )
        self.core: Chatcore = bootstrap(
            settings,
            clock=clock,
            queue=self.queue,
            store=self.with_store,
            cache=self.cache,
            leases=self.with_leases,
            heartbeats=self.with_heartbeats,
            llm=self.llm,
            service_settings=self.service_settings,
            use_intake=self.use_intake,
        )
        self.clock = self.core.clock
        self.ids = self.core.ids
        self.store = self.core.store
        self.leases = self.core.leases
        self.heartbeats = self.core.heartbeats
        self.service = self.core.service

    def generator(self, llm: LLM | None = None) -> ReplyGenerator:
        return self.core.generator if llm is None else self.core.rebuilt(llm=llm).generator

    def worker(self, worker_id: str = "w1", llm: LLM | None = None, **settings: Any) -> WorkerLoop:
        core = self.core
        if settings:
            worker = core.settings.worker.model_copy(update=settings)
            core = core.rebuilt(settings=core.settings.model_copy(update={"worker": worker}))
        if llm is not None:
            core = core.rebuilt(llm=llm)
        return core.worker(worker_id)

    async def wait_for(
        self, session_id: str, predicate: object, timeout: float = 10
    ) -> SessionView:
        """Poll the session until ``predicate(view)`` holds (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = await self.service.load(session_id)
            if predicate(view):  # type: ignore[operator]
                return view
            if loop.time() > deadline:
                raise AssertionError(f"condition not reached in {timeout}s: {view}")
            await asyncio.sleep(0.02)
