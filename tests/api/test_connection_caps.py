"""Connection caps on a real server (finding 3 of the review: 150 sockets without hello from one
address were accepted, and 60 authenticated connections on one session). The caps are per
API process; each test names the one it is about."""

from __future__ import annotations

from tests.api.support import Start, WsClient
from tests.api.test_feed import eventually


async def refused_with(client: WsClient) -> tuple[str, int | None]:
    """The error code the server sent before it closed, and the close code."""
    code = await client.close_code()
    errors = [f["code"] for f in client.received if f["type"] == "error"]
    assert len(errors) == 1, client.received
    return errors[0], code


async def test_an_address_holds_at_most_its_cap_even_before_hello(start: Start) -> None:
    api = await start(max_connections_per_ip=3)
    held = [await WsClient.open(api.ws_url) for _ in range(3)]  # no hello: still counted
    try:
        extra = await WsClient.open(api.ws_url)
        assert await refused_with(extra) == ("too_many_connections", 1008)
        await extra.close()
        await held.pop().close()
        session = await api.new_session()
        async with api.ws() as again:  # a freed place is taken again
            welcome, _ = await again.hello(session["token"])
            assert welcome["type"] == "welcome"
    finally:
        for client in held:
            await client.close()


async def test_a_session_holds_at_most_its_cap_of_connections(start: Start) -> None:
    api = await start(max_connections_per_session=2)
    session, other = await api.new_session(), await api.new_session()
    async with api.ws() as first, api.ws() as second, api.ws() as third, api.ws() as fourth:
        await first.hello(session["token"])
        await second.hello(session["token"])
        await third.send({"type": "hello", "token": session["token"]})
        assert await refused_with(third) == ("too_many_connections", 1008)
        welcome, _ = await fourth.hello(other["token"])  # another session has its own
        assert welcome["type"] == "welcome"
    async with api.ws() as later:  # both are closed now: room again
        welcome, _ = await later.hello(session["token"])
        assert welcome["type"] == "welcome"


async def test_a_full_process_answers_1013_so_a_balancer_tries_another(start: Start) -> None:
    api = await start(max_connections=2)
    session = await api.new_session()
    async with api.ws() as first, api.ws() as second, api.ws() as third:
        await first.hello(session["token"])
        assert await refused_with(third) == ("too_many_connections", 1013)
        welcome, _ = await second.hello(session["token"])
        assert welcome["type"] == "welcome"
    await eventually(lambda: api.app.state.runtime.caps.open == 0)  # every place given back
