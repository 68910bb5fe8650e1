"""Prompt building within a token budget, and event schema versions with upcasting."""

from __future__ import annotations

import orjson
import pytest

from chatcore.errors import CorruptRecord
from chatcore.events import ReplyCompleted, upcast
from chatcore.prompt import PromptMemo, PromptSettings, build_prompt, estimate_message_tokens
from chatcore.view import ChatMessage, Conversation, Profile
from chatcore_adapters.codec import decode_event, encode_event
from tests.support.factories import EPOCH


def conversation(turns: int, size: int = 400) -> Conversation:
    conv = Conversation(conversation_id="c", title="t", started_at=EPOCH)
    for n in range(turns):
        conv.messages.append(
            ChatMessage(
                message_id=f"u{n}",
                role="user",
                text=f"{n}:" + "q" * size,
                position=f"{n}-0",
                at=EPOCH,
            )
        )
        conv.messages.append(
            ChatMessage(
                message_id=f"a{n}",
                role="assistant",
                text=f"{n}:" + "a" * size,
                position=f"{n}-1",
                at=EPOCH,
                in_reply_to=f"u{n}",
            )
        )
    conv.messages.append(
        ChatMessage(message_id="last", role="user", text="the question", position="999-0", at=EPOCH)
    )
    return conv


def test_the_prompt_keeps_the_newest_history_that_fits_the_budget() -> None:
    settings = PromptSettings(system_prompt="Be brief.", max_prompt_tokens=1000)
    request = build_prompt(conversation(20), "last", Profile(), settings)
    total = sum(estimate_message_tokens(m.content) for m in request.messages)
    assert total <= 1000
    assert request.messages[0].role == "system"
    assert request.messages[1].role == "user"  # never starts with an orphan assistant turn
    assert request.messages[-1].content == "the question"
    assert request.messages[-2].content.startswith("19:")  # the newest exchange survived
    assert len(request.messages) < 42


def test_failed_and_empty_replies_are_left_out_of_the_prompt() -> None:
    conv = conversation(2)
    conv.messages[1] = conv.messages[1].model_copy(update={"status": "failed"})
    request = build_prompt(conv, "last", Profile(), PromptSettings())
    assert all(not m.content.startswith("0:a") for m in request.messages)


def test_a_question_longer_than_the_budget_is_cut_not_dropped() -> None:
    conv = conversation(0)
    conv.messages[-1] = conv.messages[-1].model_copy(update={"text": "x" * 100_000})
    request = build_prompt(conv, "last", Profile(), PromptSettings(max_prompt_tokens=500))
    assert request.messages[-1].role == "user"
    assert 0 < len(request.messages[-1].content) <= 2000


def test_the_user_context_reaches_the_system_prompt() -> None:
    request = build_prompt(
        conversation(0), "last", Profile(display_name="Grace", language="Spanish"), PromptSettings()
    )
    assert "Grace" in request.messages[0].content
    assert "Spanish" in request.messages[0].content


def test_a_memo_reuses_the_prompt_messages_of_unchanged_history_only() -> None:
    settings = PromptSettings(max_prompt_tokens=1000)
    conv = conversation(20, size=40)
    memo = PromptMemo()
    first = build_prompt(conv, "last", Profile(), settings, memo)
    assert first == build_prompt(conv, "last", Profile(), settings)
    # The next turn: the same history objects, one message replaced (a copy with other text).
    conv.messages[-3] = conv.messages[-3].model_copy(update={"text": "19:changed"})
    second = build_prompt(conv, "last", Profile(), settings, memo)
    assert second == build_prompt(conv, "last", Profile(), settings)
    assert second.messages[-3].content == "19:changed"
    assert second.messages[-3] is not first.messages[-3]
    reused = [m for m in second.messages[1:-1] if any(m is n for n in first.messages[1:-1])]
    assert len(reused) == len(second.messages) - 3  # all but the system, changed, question


def test_a_memo_holds_what_its_last_prompts_used_of_a_few_conversations() -> None:
    settings = PromptSettings(max_prompt_tokens=300)
    memo = PromptMemo(conversations=2)
    for n in range(3):
        conv = conversation(50, size=40).model_copy(update={"conversation_id": f"c{n}"})
        build_prompt(conv, "last", Profile(), settings, memo)
    assert len(memo) == 2
    assert memo.previous("c0") == {}
    # Only the messages the budget reached are kept, not the whole history of 100.
    assert 0 < len(memo.previous("c2")) < 20
    with pytest.raises(ValueError, match="at least 1"):
        PromptMemo(conversations=0)


def test_a_version_1_reply_completed_record_is_upcast_on_read() -> None:
    old = {
        "type": "reply_completed",
        "v": 1,
        "at": EPOCH.isoformat(),
        "conversation_id": "c",
        "reply_id": "r",
        "tokens": 42,
    }
    event = decode_event(orjson.dumps(old))
    assert isinstance(event, ReplyCompleted)
    assert event.usage.completion_tokens == 42
    assert event.model == "unknown"


def test_current_events_are_written_with_their_schema_version() -> None:
    event = ReplyCompleted.model_validate(
        upcast(
            "reply_completed",
            1,
            {
                "at": EPOCH.isoformat(),
                "conversation_id": "c",
                "reply_id": "r",
                "type": "reply_completed",
                "tokens": 1,
            },
        )
    )
    assert orjson.loads(encode_event(event))["v"] == 2
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b'{"type": "no_such_event", "v": 1}',
        b'{"type": "reply_completed", "v": 9}',
        b'{"type": "message_submitted", "v": 1, "at": "x"}',
    ],
)
def test_unreadable_records_raise_the_port_s_error(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        decode_event(raw)
