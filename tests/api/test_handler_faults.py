"""A fault nobody foresaw inside the ``/ws`` handler closes the socket with 1011 and a log line
of chatcore's own: never an "Exception in ASGI application" from the server underneath."""

from __future__ import annotations

import logging

import pytest
from dependency_injector import providers

from chatcore.ports import AppendListener
from chatcore_adapters.memory import MemoryEventStore
from chatcore_adapters.memory.event_store import MemoryLiveSubscription
from chatcore_api.container import Container
from tests.api.support import SharedMemory, serve, settings_for


class _BrokenSubscription(MemoryLiveSubscription):
    """A live subscription that fails in a way no port promises (a library bug, say)."""

    async def follow(self, session_id: str) -> None:
        raise RuntimeError("read() called while another coroutine is already waiting")


class _StoreWithBrokenFeed(MemoryEventStore):
    def subscribe(self, listener: AppendListener) -> MemoryLiveSubscription:
        return _BrokenSubscription(self, listener)


async def test_an_unexpected_error_in_the_handler_closes_with_1011_and_our_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = SharedMemory()
    broken = _StoreWithBrokenFeed(shared.clock)

    def share(container: Container) -> None:
        shared.attach(container)
        container.store.override(providers.Object(broken))

    caplog.set_level(logging.INFO)
    async with serve(settings_for(), share=share) as api:
        session = await api.new_session()
        async with api.ws() as ws:
            await ws.send({"type": "hello", "token": session["token"], "last_event_id": None})
            assert await ws.close_code() == 1011
        # The server goes on serving other requests.
        assert (await api.new_session())["session_id"]

    ours = [r for r in caplog.records if r.name.startswith("chatcore_api")]
    failed = [r for r in ours if "handler failed" in r.getMessage()]
    assert failed, [r.getMessage() for r in ours]
    assert getattr(failed[0], "session_id", None) == session["session_id"]
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]
