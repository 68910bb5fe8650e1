"""Model-spend budgets: a reply's tokens are charged to the budgets its work item names, and
work items read by workers of another version."""

from __future__ import annotations

import asyncio
import json

import pytest

from chatcore.errors import LLMError
from chatcore.generation import Outcome
from chatcore.ports import Charge, WorkItem
from chatcore.service import OpenedSession
from chatcore_adapters.memory import MemoryRateLimits
from tests.support.harness import Harness
from tests.support.scripted_llm import ScriptedLLM

# One token a second, a minute's worth at once: a charge of N tokens leaves N - 59 s to wait
# before the budget lets another message through.
PER_MINUTE = 60.0


def budget(key: str) -> Charge:
    return Charge(key=key, tokens_per_minute=PER_MINUTE, burst=PER_MINUTE)


async def submit(h: Harness, *charges: Charge, text: str = "Hi") -> tuple[OpenedSession, WorkItem]:
    s = await h.service.open_session()
    await h.service.submit_message(
        s.session_id,
        conversation_id=s.conversation_id,
        client_message_id="c1",
        text=text,
        charges=charges,
    )
    (delivery,) = await h.queue.claim("w1", count=1, block=0.1)
    assert delivery.item.charges == charges, "the queued item names the budgets to charge"
    return s, delivery.item


async def debt(h: Harness, charge: Charge) -> float:
    """Seconds until the budget lets one more token through."""
    return await h.core.rate_limits.check(charge.key, charge.rate)


async def test_a_completed_reply_charges_its_reported_tokens_to_each_budget() -> None:
    h = Harness(llm=ScriptedLLM(words=["w"] * 80))  # usage: 7 prompt + 80 completion tokens
    ip, total = budget("tokens:ip:abc"), budget("tokens:total")
    _, item = await submit(h, ip, total)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    for charge in (ip, total):
        assert await debt(h, charge) == pytest.approx(87 - 59, abs=0.5)
    assert await debt(h, budget("tokens:ip:other")) == 0.0


async def test_a_reply_whose_item_names_no_budget_charges_nothing() -> None:
    h = Harness(llm=ScriptedLLM(words=["w"] * 80))
    _, item = await submit(h)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.COMPLETED
    assert isinstance(h.core.rate_limits, MemoryRateLimits)
    assert h.core.rate_limits.size == 0


async def test_a_cancelled_reply_charges_the_prompt_and_what_was_said() -> None:
    h = Harness(llm=ScriptedLLM(words=["word "] * 400, delay=0.01))
    charge = budget("tokens:ip:cancel")
    s, item = await submit(h, charge, text="x" * 400)  # ~100 prompt tokens
    generating = h.generator().generate(item, delivery_id="d1", owner="w1")
    task = asyncio.create_task(generating)
    await h.wait_for(s.session_id, lambda v: v.find_turn(item.message_id)[1].reply is not None)
    await h.service.cancel_reply(s.session_id, conversation_id=s.conversation_id)
    assert await task is Outcome.CANCELLED
    assert await debt(h, charge) > 100 - 59, "at least the prompt was charged"


async def test_a_reply_that_failed_before_saying_anything_charges_nothing() -> None:
    llm = ScriptedLLM(words=["a"], fail_after=0, error=LLMError("unavailable", "Down."))
    h = Harness(llm=llm)
    charge = budget("tokens:ip:failed")
    _, item = await submit(h, charge)
    assert await h.generator().generate(item, delivery_id="d1", owner="w1") is Outcome.FAILED
    assert await debt(h, charge) == 0.0


def test_a_work_item_from_a_newer_api_is_read_with_its_unknown_fields_ignored() -> None:
    stored = {
        "session_id": "S" * 32,
        "conversation_id": "c1",
        "message_id": "m1",
        "enqueued_at": "2026-01-01T00:00:00Z",
        "charges": [{"key": "tokens:total", "tokens_per_minute": 100, "burst": 100, "x": 1}],
        "priority": "high",
    }
    item = WorkItem.model_validate_json(json.dumps(stored))
    assert item.message_id == "m1"
    assert item.charges[0].rate.limit == 100


def test_a_work_item_without_charges_is_stored_as_older_workers_read_it() -> None:
    item = WorkItem.model_validate(
        {
            "session_id": "S" * 32,
            "conversation_id": "c1",
            "message_id": "m1",
            "enqueued_at": "2026-01-01T00:00:00Z",
        }
    )
    stored = json.loads(item.model_dump_json(exclude_defaults=True))
    assert set(stored) == {"session_id", "conversation_id", "message_id", "enqueued_at"}
