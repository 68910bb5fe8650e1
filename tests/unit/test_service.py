"""The use cases over the in-memory adapters: sessions, submission, cancel, cache, sweeping."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from chatcore import decisions
from chatcore.errors import (
    EmptyMessage,
    InvalidIdentifier,
    InvalidProfile,
    MessageTooLong,
    NothingToCancel,
    ReplyInProgress,
    SessionNotFound,
    UnknownConversation,
)
from chatcore.events import MessageSubmitted, ProfileUpdated, ReplyCancelled, SessionRestored
from chatcore.view import fold
from chatcore_adapters.codec import decode_records
from tests.support.factories import EPOCH
from tests.support.harness import Harness


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_opening_a_session_records_it_with_a_first_conversation(h: Harness) -> None:
    opened = await h.service.open_session(display_name="Ada", language="English")
    view = await h.service.load(opened.session_id)
    assert list(view.conversations) == [opened.conversation_id]
    assert view.profile.display_name == "Ada"
    assert len(opened.session_id) >= 32


async def test_an_unknown_or_malformed_session_is_refused(h: Harness) -> None:
    with pytest.raises(SessionNotFound):
        await h.service.load("x" * 32)
    with pytest.raises(InvalidIdentifier):
        await h.service.load("no:colons*")


async def test_submitting_records_the_message_and_queues_its_answer(h: Harness) -> None:
    s = await h.service.open_session()
    res = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c-1", text="Hi"
    )
    assert not res.duplicate
    assert h.queue.queued_count() == 1
    events = await h.service.events_after(s.session_id, None)
    assert [e.position for e in events if isinstance(e.event, MessageSubmitted)] == [res.position]


async def test_submitting_the_same_client_message_id_twice_records_it_once(h: Harness) -> None:
    """I4: a retry, an outbox flush or a second tab never makes a second message."""
    s = await h.service.open_session()
    first = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c-1", text="Hi"
    )
    again = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c-1", text="Hi"
    )
    assert again.duplicate
    assert (again.message_id, again.position) == (first.message_id, first.position)
    submitted = [
        r
        for r in await h.service.events_after(s.session_id, None)
        if isinstance(r.event, MessageSubmitted)
    ]
    assert len(submitted) == 1


async def test_concurrent_identical_submissions_record_one_message(h: Harness) -> None:
    s = await h.service.open_session()
    results = await asyncio.gather(
        *(
            h.service.submit_message(
                s.session_id, conversation_id=s.conversation_id, client_message_id="c-9", text="x"
            )
            for _ in range(8)
        )
    )
    assert len({r.message_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1


@pytest.mark.parametrize(
    ("text", "error"),
    [("", EmptyMessage), ("   \n ", EmptyMessage), ("x" * 8001, MessageTooLong)],
)
async def test_bad_messages_are_refused_with_a_clear_error(
    h: Harness, text: str, error: type[Exception]
) -> None:
    s = await h.service.open_session()
    with pytest.raises(error):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text=text
        )
    assert await h.core.intents.stale(older_than=0) == []


async def test_a_message_to_an_unknown_conversation_is_refused(h: Harness) -> None:
    s = await h.service.open_session()
    with pytest.raises(UnknownConversation):
        await h.service.submit_message(
            s.session_id, conversation_id="nope", client_message_id="c1", text="hi"
        )


async def test_a_conversation_answers_one_message_at_a_time(h: Harness) -> None:
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="one"
    )
    with pytest.raises(ReplyInProgress):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id="c2", text="two"
        )
    other, _ = await h.service.start_conversation(s.session_id, title="Other")
    await h.service.submit_message(
        s.session_id, conversation_id=other, client_message_id="c3", text="three"
    )


async def test_cancel_before_any_reply_closes_the_turn_at_once(h: Harness) -> None:
    s = await h.service.open_session()
    with pytest.raises(NothingToCancel):
        await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="one"
    )
    recs = await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    assert isinstance(recs[0].event, ReplyCancelled)
    view = await h.service.load(s.session_id)
    assert view.conversations[s.conversation_id].pending is None


async def test_the_first_message_titles_the_conversation(h: Harness) -> None:
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id,
        conversation_id=s.conversation_id,
        client_message_id="c1",
        text="How do   Redis streams work?",
    )
    view = await h.service.load(s.session_id)
    assert view.conversations[s.conversation_id].title == "How do Redis streams work?"


async def test_the_cache_never_changes_what_a_reader_sees(h: Harness) -> None:
    """I2 through the service: delete the cache, or put an old one back, and load the same."""
    s = await h.service.open_session()
    old = await h.cache.get(s.session_id)
    assert old is not None
    for n in range(5):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id=f"c{n}", text="t"
        )
        await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    truth = fold(await h.service.events_after(s.session_id, None))
    assert await h.service.load(s.session_id) == truth
    await h.cache.put(s.session_id, old.view)  # an old entry written back
    assert await h.service.load(s.session_id) == truth
    await h.cache.delete(s.session_id)
    assert await h.service.load(s.session_id) == truth
    h.cache.put_raw(s.session_id, b"garbage")
    assert await h.service.load(s.session_id) == truth
    future = truth.copy_view()
    future.version = "99999999999999-0"  # a cache that claims to be ahead of the log
    await h.cache.put(s.session_id, future)
    assert await h.service.load(s.session_id) == truth


async def test_a_crash_between_append_and_enqueue_is_repaired_by_the_sweeper() -> None:
    h = Harness(use_intake=False)  # (with an intake there is no "between")
    s = await h.service.open_session()

    async def dies(item: object) -> None:
        raise RuntimeError("process killed")

    real_enqueue = h.queue.enqueue
    h.queue.enqueue = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
        )
    h.queue.enqueue = real_enqueue  # type: ignore[method-assign]
    assert h.queue.queued_count() == 0
    assert await h.service.sweep_intents(older_than=0) == 1
    (delivery,) = await h.queue.claim("w", count=5, block=0.1)
    assert delivery.item.session_id == s.session_id
    assert await h.core.intents.stale(older_than=0) == []


async def test_a_retried_submission_requeues_work_that_was_never_queued() -> None:
    h = Harness(use_intake=False)
    s = await h.service.open_session()
    real_enqueue = h.queue.enqueue

    async def dies(item: object) -> None:
        raise RuntimeError("process killed")

    h.queue.enqueue = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
        )
    h.queue.enqueue = real_enqueue  # type: ignore[method-assign]
    again = await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
    )
    assert again.duplicate
    assert h.queue.queued_count() == 1


async def test_with_an_intake_a_message_and_its_work_are_queued_together(h: Harness) -> None:
    s = await h.service.open_session()
    assert h.core.service.intake is not None
    real_enqueue = h.queue.enqueue

    async def dies(item: object) -> None:
        raise RuntimeError("process killed")

    h.queue.enqueue = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.service.submit_message(
            s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
        )
    h.queue.enqueue = real_enqueue  # type: ignore[method-assign]
    view = await h.service.load(s.session_id)
    assert "c1" not in view.client_messages  # neither the message ...
    assert h.queue.queued_count() == 0  # ... nor its work
    assert await h.core.intents.stale(older_than=0) == []  # and no intent was needed
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c1", text="hi"
    )
    assert h.queue.queued_count() == 1


async def test_profile_updates_are_validated_and_recorded(h: Harness) -> None:
    s = await h.service.open_session()
    recs = await h.service.update_profile(s.session_id, display_name=" Ada ", language="Deutsch")
    assert isinstance(recs[0].event, ProfileUpdated)
    assert recs[0].event.display_name == "Ada"
    with pytest.raises(InvalidProfile, match="at most 64"):
        await h.service.update_profile(s.session_id, display_name="x" * 65, language=None)


async def test_a_profile_update_changes_only_the_fields_it_names(h: Harness) -> None:
    s = await h.service.open_session(display_name="Ada")
    (rec,) = await h.service.update_profile(s.session_id, language="German")
    # The event carries the whole profile after the change: folding it replaces the profile.
    assert rec.event == ProfileUpdated(at=rec.event.at, display_name="Ada", language="German")
    assert await h.service.update_profile(s.session_id) == []  # nothing named: nothing recorded
    assert await h.service.update_profile(s.session_id, display_name="  Ada ") == []
    (cleared,) = await h.service.update_profile(s.session_id, display_name=None)
    assert cleared.event == ProfileUpdated(
        at=cleared.event.at, display_name=None, language="German"
    )
    view = await h.service.load(s.session_id)
    assert (view.profile.display_name, view.profile.language) == (None, "German")


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
async def test_a_blank_profile_field_is_refused_not_stored_as_empty(h: Harness, blank: str) -> None:
    s = await h.service.open_session(display_name="Ada", language="German")
    with pytest.raises(InvalidProfile, match="blank"):
        await h.service.update_profile(s.session_id, display_name=blank)
    with pytest.raises(InvalidProfile, match="blank"):
        await h.service.update_profile(s.session_id, language=blank)
    with pytest.raises(InvalidProfile, match="blank"):
        await h.service.open_session(display_name=blank)
    view = await h.service.load(s.session_id)
    assert (view.profile.display_name, view.profile.language) == ("Ada", "German")


def test_stored_profile_events_fold_as_they_always_did() -> None:
    """Events written before updates became partial carried both fields, null for "none"; a
    stored one still replaces the whole profile."""
    opened = {"type": "session_opened", "at": EPOCH.isoformat(), "session_id": "s" * 32, "v": 1}
    named = {"type": "profile_updated", "at": EPOCH.isoformat(), "display_name": "Ada", "v": 1}
    language_only = {
        "type": "profile_updated",
        "at": EPOCH.isoformat(),
        "display_name": None,
        "language": "fr",
        "v": 1,
    }
    records = decode_records(
        [(f"1-{n}", orjson.dumps(raw)) for n, raw in enumerate([opened, named, language_only])]
    )
    view = fold(records[:2])
    assert (view.profile.display_name, view.profile.language) == ("Ada", None)
    view = fold(records)
    assert (view.profile.display_name, view.profile.language) == (None, "fr")


async def test_a_reconnect_storm_records_one_restore_per_interval(h: Harness) -> None:
    s = await h.service.open_session()
    for _ in range(20):
        await h.service.restore_session(s.session_id, last_seen=None)
    view = await h.service.load(s.session_id)
    assert view.restores == 1
    assert view.last_restored_at is not None
    interval = timedelta(seconds=60)
    later = view.last_restored_at + interval
    assert (
        decisions.restore_session(view, later - timedelta(seconds=1), None, min_interval=interval)
        == []
    )
    (again,) = decisions.restore_session(view, later, "1-0", min_interval=interval)
    assert again == SessionRestored(at=later, last_seen="1-0")


async def test_a_turns_only_view_is_never_cached(h: Harness) -> None:
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id, conversation_id=s.conversation_id, client_message_id="c-1", text="Hi"
    )
    whole = await h.service.load(s.session_id)
    slim = whole.for_turns()
    assert slim.conversations[s.conversation_id].messages == []
    with pytest.raises(ValueError, match="never cached"):
        await h.service._remember(s.session_id, slim)
    cached = await h.cache.get(s.session_id)
    assert cached is not None and cached.view == whole  # the cache still holds the whole view
