"""In-memory adapters: real implementations of every storage port, for one process."""

from chatcore_adapters.memory.cache import MemorySessionCache
from chatcore_adapters.memory.event_store import MemoryEventStore
from chatcore_adapters.memory.heartbeats import MemoryHeartbeats
from chatcore_adapters.memory.intake import MemoryIntake
from chatcore_adapters.memory.intents import MemoryIntentJournal
from chatcore_adapters.memory.leases import MemoryLeases
from chatcore_adapters.memory.queue import MemoryWorkQueue
from chatcore_adapters.memory.rate_limits import MemoryRateLimits

__all__ = [
    "MemoryEventStore",
    "MemoryHeartbeats",
    "MemoryIntake",
    "MemoryIntentJournal",
    "MemoryLeases",
    "MemoryRateLimits",
    "MemorySessionCache",
    "MemoryWorkQueue",
]
