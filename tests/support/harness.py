"""A complete in-memory chatcore for use-case tests: service, generator and worker loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chatcore.generation import GenerationSettings, ReplyGenerator
from chatcore.ports import LLM
from chatcore.service import ChatService, ServiceSettings
from chatcore.view import SessionView
from chatcore.worker import WorkerLoop, WorkerSettings
from chatcore_adapters.memory import (
    MemoryEventStore,
    MemoryHeartbeats,
    MemoryLeases,
    MemorySessionCache,
    MemoryWorkQueue,
)
from chatcore_adapters.system import RandomIds, SystemClock
from tests.support.scripted_llm import ScriptedLLM

FAST = GenerationSettings(
    flush_interval=0.005, cancel_poll_interval=0.05, lease_ttl=2.0, keepalive_interval=0.2
)


@dataclass
class Harness:
    llm: LLM = field(default_factory=ScriptedLLM)
    reclaim_after: float = 1.0
    generation: GenerationSettings = FAST
    service_settings: ServiceSettings = field(default_factory=ServiceSettings)

    def __post_init__(self) -> None:
        self.clock = SystemClock()
        self.ids = RandomIds()
        self.store = MemoryEventStore(self.clock)
        self.cache = MemorySessionCache(self.clock)
        self.queue = MemoryWorkQueue(self.clock, reclaim_after=self.reclaim_after)
        self.leases = MemoryLeases(self.clock)
        self.heartbeats = MemoryHeartbeats(self.clock)
        self.service = ChatService(
            store=self.store,
            cache=self.cache,
            queue=self.queue,
            clock=self.clock,
            ids=self.ids,
            settings=self.service_settings,
        )

    def generator(self, llm: LLM | None = None) -> ReplyGenerator:
        return ReplyGenerator(
            service=self.service,
            llm=llm or self.llm,
            leases=self.leases,
            clock=self.clock,
            ids=self.ids,
            settings=self.generation,
        )

    def worker(
        self, worker_id: str = "w1", llm: LLM | None = None, **settings: float
    ) -> WorkerLoop:
        base = {"claim_block": 0.1, "heartbeat_interval": 0.1, "sweep_interval": 0.2}
        base.update(settings)
        return WorkerLoop(
            queue=self.queue,
            generator=self.generator(llm),
            service=self.service,
            clock=self.clock,
            worker_id=worker_id,
            settings=WorkerSettings(**base),  # type: ignore[arg-type]
            heartbeats=self.heartbeats,
        )

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
