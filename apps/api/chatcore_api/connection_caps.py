"""How many WebSocket connections this process holds: in all, per client address, per session.

The counts are this process's own (exact, and gone with it): N API processes hold up to N
times each cap, which a load balancer spreading clients keeps near the cap anyway. A
connection is counted from the handshake (before ``hello``: an unauthenticated socket costs
memory too) and, once its session is proven, under the session as well.
"""

from __future__ import annotations

import enum
from collections import Counter


class Admission(enum.Enum):
    ADMITTED = "admitted"
    PROCESS_FULL = "process_full"  # close 1013: another process may have room
    CLIENT_FULL = "client_full"  # too many from this address: too_many_connections, 1008


class ConnectionCaps:
    def __init__(self, *, total: int, per_client: int, per_session: int) -> None:
        self.total = total
        self.per_client = per_client
        self.per_session = per_session
        self._clients: Counter[str] = Counter()
        self._sessions: Counter[str] = Counter()
        self.open = 0

    def admit(self, client: str) -> Admission:
        """Count a new connection from ``client`` if there is room (then :meth:`release`)."""
        if self.open >= self.total:
            return Admission.PROCESS_FULL
        if self._clients[client] >= self.per_client:
            return Admission.CLIENT_FULL
        self.open += 1
        self._clients[client] += 1
        return Admission.ADMITTED

    def release(self, client: str) -> None:
        self.open -= 1
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]

    def join(self, session_id: str) -> bool:
        """Count an authenticated connection of ``session_id`` if there is room (then
        :meth:`leave`)."""
        if self._sessions[session_id] >= self.per_session:
            return False
        self._sessions[session_id] += 1
        return True

    def leave(self, session_id: str) -> None:
        self._sessions[session_id] -= 1
        if self._sessions[session_id] <= 0:
            del self._sessions[session_id]
