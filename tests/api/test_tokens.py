"""Session tokens: signed, expiring, bound to their session and generation, never shown; keys
that rotate without logging anybody out; a session logged out everywhere (finding 6)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from chatcore_api.errors import TokenExpired, Unauthorized
from chatcore_api.settings import SettingsError
from chatcore_api.tokens import Grant, TokenSigner, key_id
from tests.api.support import SECRET, Start, WsClient, is_event, send_frame, settings_for
from tests.support.factories import ManualClock
from tests.support.scripted_llm import ScriptedLLM

KEY = b"unit-test-key-" * 3
NEW_KEY = b"the-next-key-" * 3
SID = "S" * 32


def signer(
    clock: ManualClock, ttl: timedelta = timedelta(hours=1), keys: list[bytes] | None = None
) -> TokenSigner:
    return TokenSigner(keys or [KEY], ttl=ttl, clock=clock)


def test_a_token_names_its_session_until_it_expires() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    issued = signer(clock).issue(SID)
    assert issued.token.startswith(f"v2.{key_id(KEY)}.{SID}.0.")
    assert signer(clock).verify(issued.token) == Grant(SID, 0)
    assert issued.expires_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    clock.advance(3599)
    assert signer(clock).verify(issued.token) == Grant(SID, 0)
    clock.advance(1)
    with pytest.raises(TokenExpired):
        signer(clock).verify(issued.token)


@pytest.mark.parametrize("part", [1, 2, 3, 4, 5])
def test_changing_any_part_of_a_token_invalidates_it(part: int) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    token = signer(clock).issue(SID, generation=3).token
    pieces = token.split(".")
    original = pieces[part]
    pieces[part] = ("T" if original[0] != "T" else "U") + original[1:]
    if part == 3:
        pieces[part] = "4"  # a later generation: past a logout
    if part == 4:
        pieces[part] = str(int(original) + 86_400)  # stretch the expiry by a day
    with pytest.raises(Unauthorized) as refused:
        signer(clock).verify(".".join(pieces))
    assert not isinstance(refused.value, TokenExpired)


def test_a_token_from_another_key_or_garbage_is_refused() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    other = TokenSigner(b"another-key-0123456789", ttl=timedelta(hours=1), clock=clock)
    for token in (other.issue(SID).token, "", "v1...", "x" * 2000, "v3.a.b.c", "v2.a.b.c.d.e"):
        with pytest.raises(Unauthorized):
            signer(clock).verify(token)


def test_keys_rotate_without_logging_anybody_out() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    before = signer(clock, keys=[KEY]).issue(SID).token
    rotated = signer(clock, keys=[NEW_KEY, KEY])
    assert rotated.verify(before) == Grant(SID, 0), "the old key still verifies"
    after = rotated.issue(SID).token
    assert after.split(".")[1] == key_id(NEW_KEY), "the first key signs"
    with pytest.raises(Unauthorized):
        signer(clock, keys=[KEY]).verify(after)  # a server that does not know the new key yet
    with pytest.raises(Unauthorized):
        signer(clock, keys=[NEW_KEY]).verify(before)  # the old key retired


def v1_token(key: bytes, session_id: str, expiry: int) -> str:
    """A token as servers before key ids issued them."""
    message = b"chatcore/session-token/v1\x00" + f"{session_id}\x00{expiry}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return f"v1.{session_id}.{expiry}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_tokens_from_before_key_ids_are_verified_with_the_first_key_as_generation_0() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    expiry = int(clock.now().timestamp()) + 600
    old = v1_token(KEY, SID, expiry)
    assert signer(clock).verify(old) == Grant(SID, 0)
    assert signer(clock, keys=[KEY, NEW_KEY]).verify(old) == Grant(SID, 0)
    with pytest.raises(Unauthorized):
        signer(clock, keys=[NEW_KEY, KEY]).verify(old)  # after a rotation: retired
    with pytest.raises(Unauthorized):
        signer(clock).verify(old[:-2] + ("AA" if not old.endswith("AA") else "BB"))
    clock.advance(600)
    with pytest.raises(TokenExpired):
        signer(clock).verify(old)


def test_tokens_do_not_show_in_reprs() -> None:
    issued = signer(ManualClock()).issue(SID)
    assert issued.token not in repr(issued)
    assert KEY.decode() not in repr(signer(ManualClock()))


def test_the_key_list_setting_is_split_checked_and_exclusive() -> None:
    keys = ["a" * 40, "b" * 40]
    settings = settings_for(secret_key=None, secret_keys=",".join(keys))
    assert [k.get_secret_value() for k in settings.secret_keys or []] == keys
    with pytest.raises(SettingsError, match="not both"):
        settings_for(secret_keys=",".join(keys))  # secret_key is set too
    with pytest.raises(SettingsError, match="32 characters"):
        settings_for(secret_key=None, secret_keys="a" * 40 + ",short")
    with pytest.raises(SettingsError, match="twice"):
        settings_for(secret_key=None, secret_keys="a" * 40 + "," + "a" * 40)


# --- rotation and logout on real servers ------------------------------------------------------


async def test_a_server_with_the_rotated_key_list_keeps_every_session(start: Start) -> None:
    old = await start()  # signs with SECRET
    session = await old.new_session()
    rotated = await start(secret_key=None, secret_keys=f"{'n' * 40},{SECRET}")
    async with rotated.ws() as client:
        welcome, _ = await client.hello(session["token"])
    assert welcome["token"].split(".")[1] == key_id(b"n" * 40), "renewed under the new key"
    async with old.client() as http:  # a server not rotated yet still reads the old tokens
        response = await http.get(
            f"/api/sessions/{session['session_id']}",
            headers={"Authorization": f"Bearer {session['token']}"},
        )
    assert response.status_code == 200


async def test_logging_out_everywhere_refuses_every_earlier_token_on_every_process(
    start: Start,
) -> None:
    a = await start(llm=ScriptedLLM())
    b = await start(llm=ScriptedLLM())
    session = await a.new_session()
    sid, old = session["session_id"], session["token"]
    on_a, on_b = await WsClient.open(a.ws_url), await WsClient.open(b.ws_url)
    try:
        welcome, _ = await on_b.hello(old)
        renewed = welcome["token"]  # an earlier token too, issued on another process
        await on_a.hello(old)
        async with b.client() as http:
            answer = await http.post(
                f"/api/sessions/{sid}/tokens/revoke", headers={"Authorization": f"Bearer {old}"}
            )
        assert answer.status_code == 200, answer.text
        fresh = answer.json()["token"]
        assert fresh.split(".")[3] == "1", "a token of the new generation"
        for client in (on_a, on_b):  # both processes close their connections of the session
            assert await client.close_code() == 4001
            await client.until(is_event("tokens_revoked"))
            assert client.received[-1] == {
                "type": "error",
                "code": "unauthorized",
                "message": "this session was logged out everywhere; this token is no longer valid",
                "request_id": None,
                "retry_after": None,
            }
    finally:
        await on_a.close()
        await on_b.close()
    async with a.client() as http:
        for token in (old, renewed):
            refused = await http.get(
                f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
        ok = await http.get(f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {fresh}"})
        assert ok.status_code == 200
    async with b.ws() as again:
        await again.send({"type": "hello", "token": renewed})
        assert await again.close_code() == 4001
        assert again.received[-1]["code"] == "unauthorized"
    async with b.ws() as again:
        welcome, _ = await again.hello(fresh)
        assert welcome["token"].split(".")[3] == "1"
        ack = await again.request(send_frame(session))
        assert ack["type"] == "ack"


async def test_only_a_current_token_of_the_session_may_log_it_out(start: Start) -> None:
    api = await start()
    mine, theirs = await api.new_session(), await api.new_session()
    async with api.client() as http:
        forbidden = await http.post(
            f"/api/sessions/{mine['session_id']}/tokens/revoke",
            headers={"Authorization": f"Bearer {theirs['token']}"},
        )
        anonymous = await http.post(f"/api/sessions/{mine['session_id']}/tokens/revoke")
        first = await http.post(
            f"/api/sessions/{mine['session_id']}/tokens/revoke",
            headers={"Authorization": f"Bearer {mine['token']}"},
        )
        again = await http.post(
            f"/api/sessions/{mine['session_id']}/tokens/revoke",
            headers={"Authorization": f"Bearer {mine['token']}"},
        )
    assert (forbidden.status_code, anonymous.status_code) == (403, 401)
    assert first.status_code == 200
    assert again.status_code == 401, "the token it replaced cannot log it out again"
