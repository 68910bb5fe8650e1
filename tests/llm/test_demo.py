"""The offline demo model: what it says, how it paces itself, how it continues."""

from __future__ import annotations

import asyncio

import pytest

from chatcore.ports import CompletionRequest, LLMChunk, PromptMessage, TextDelta, UsageReport
from chatcore.prompt import estimate_text_tokens
from chatcore_adapters.llm import DEMO_NAME, DemoLLM, LLMSettings, build_llm
from chatcore_adapters.llm.demo import compose_answer, find_user_name

WAIT = 10.0


def conversation(*turns: tuple[str, str]) -> CompletionRequest:
    return CompletionRequest(
        messages=tuple(PromptMessage(role=role, content=text) for role, text in turns)
    )


async def chunks_of(llm: DemoLLM, request: CompletionRequest) -> list[LLMChunk]:
    async with asyncio.timeout(WAIT):
        return [chunk async for chunk in llm.stream(request)]


def text(chunks: list[LLMChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


async def test_it_is_labelled_as_a_demo() -> None:
    llm = DemoLLM(delay=0)
    assert llm.name == DEMO_NAME
    assert "offline demo" in llm.name
    chunks = await chunks_of(llm, conversation(("user", "hi")))
    assert {c.model for c in chunks if isinstance(c, TextDelta | UsageReport)} == {DEMO_NAME}


async def test_it_quotes_the_question_and_explains_chatcore_and_configuration() -> None:
    answer = text(await chunks_of(DemoLLM(delay=0), conversation(("user", "Why is the sky blue?"))))

    assert 'You asked: "Why is the sky blue?"' in answer
    assert "event-sourced" in answer
    assert "resumable" in answer
    assert "crash" in answer
    assert "CHATCORE_LLM__MODEL=openai/gpt-4o-mini" in answer
    assert "OPENAI_API_KEY" in answer
    assert "CHATCORE_LLM__FALLBACKS" in answer


async def test_it_answers_the_last_user_message() -> None:
    request = conversation(
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question")
    )
    answer = text(await chunks_of(DemoLLM(delay=0), request))

    assert '"second question"' in answer
    assert "first question" not in answer
    assert "message number 2" in answer


@pytest.mark.parametrize(
    "system",
    [
        "The user's name is Ada Lovelace. Answer briefly.",
        "You are helpful. The user is called Ada Lovelace.",
        "Address the user as Ada Lovelace.",
        "the user\u2019s name is \u201cAda Lovelace\u201d and she likes maths",
    ],
)
async def test_it_greets_the_user_by_the_name_in_the_system_prompt(system: str) -> None:
    request = conversation(("system", system), ("user", "hello"))
    answer = text(await chunks_of(DemoLLM(delay=0), request))

    assert answer.startswith("Hi Ada Lovelace!")


async def test_the_operator_system_prompt_counts_too() -> None:
    llm = build_llm(LLMSettings(demo_delay=0, system_prompt="The user's name is Grace."))
    assert isinstance(llm, DemoLLM)

    answer = text(await chunks_of(llm, conversation(("user", "hello"))))

    assert answer.startswith("Hi Grace!")


def test_without_a_name_it_says_plain_hi() -> None:
    answer = compose_answer(conversation(("user", "hello")).messages)
    assert answer.startswith("Hi! ")
    assert find_user_name(conversation(("system", "Be concise."), ("user", "x")).messages) is None
    assert find_user_name(conversation(("user", "my name is Bob")).messages) is None


async def test_the_same_conversation_gets_the_same_answer_in_the_same_pieces() -> None:
    request = conversation(("user", "Tell me about logs"))
    first = await chunks_of(DemoLLM(delay=0), request)
    second = await chunks_of(DemoLLM(delay=0), request)

    assert first == second
    assert text(first) != text(await chunks_of(DemoLLM(delay=0), conversation(("user", "x"))))


async def test_a_setup_question_puts_configuration_first() -> None:
    setup = text(await chunks_of(DemoLLM(delay=0), conversation(("user", "How to set a model?"))))
    other = text(await chunks_of(DemoLLM(delay=0), conversation(("user", "Tell me a joke"))))

    assert setup.index("CHATCORE_LLM__MODEL") < setup.index("event-sourced")
    assert other.index("event-sourced") < other.index("CHATCORE_LLM__MODEL")


async def test_it_streams_word_sized_tokens() -> None:
    chunks = await chunks_of(DemoLLM(delay=0), conversation(("user", "hello")))
    deltas = [c.text for c in chunks if isinstance(c, TextDelta)]

    assert len(deltas) > 50
    assert all(d.strip() and len(d.split()) == 1 for d in deltas)


async def test_usage_is_estimated_from_the_characters() -> None:
    request = conversation(("system", "Be brief."), ("user", "hello there"))
    chunks = await chunks_of(DemoLLM(delay=0), request)
    report = chunks[-1]

    assert isinstance(report, UsageReport)
    assert report.usage.prompt_tokens == estimate_text_tokens("Be brief.hello there")
    assert report.usage.completion_tokens == estimate_text_tokens(text(chunks))
    assert report.usage.cost_usd == 0.0


def test_the_default_pace_is_30_to_60_tokens_a_second() -> None:
    delay = LLMSettings().demo_delay
    answer = compose_answer(conversation(("user", "What is chatcore?")).messages)
    pieces = len(answer.split())
    tokens_per_second = estimate_text_tokens(answer) / (pieces * delay)

    assert 30 <= tokens_per_second <= 60


async def test_continue_from_skips_what_was_already_said() -> None:
    request = conversation(("user", "What is chatcore?"))
    full = text(await chunks_of(DemoLLM(delay=0), request))
    for cut in (1, 17, len(full) // 2, len(full) - 3):
        said = full[:cut]
        continued = CompletionRequest(messages=request.messages, continue_from=said)
        rest = text(await chunks_of(DemoLLM(delay=0), continued))
        assert said + rest == full, cut


async def test_continue_from_another_models_text_goes_on_at_a_word_boundary() -> None:
    request = conversation(("user", "What is chatcore?"))
    full = text(await chunks_of(DemoLLM(delay=0), request))
    said = "Something another model said before failing, "

    chunks = await chunks_of(
        DemoLLM(delay=0), CompletionRequest(messages=request.messages, continue_from=said)
    )
    rest = text(chunks)

    assert rest
    assert not rest[0].isspace()
    assert full.endswith(rest)
    assert len(rest) < len(full) - len(said) + 1


async def test_continue_from_only_whitespace_starts_from_the_beginning() -> None:
    request = conversation(("user", "hello"))
    full = text(await chunks_of(DemoLLM(delay=0), request))

    rest = text(
        await chunks_of(
            DemoLLM(delay=0), CompletionRequest(messages=request.messages, continue_from=" ")
        )
    )

    assert rest == full


async def test_continue_from_the_whole_answer_leaves_only_the_usage_report() -> None:
    request = conversation(("user", "hello"))
    full = text(await chunks_of(DemoLLM(delay=0), request))

    chunks = await chunks_of(
        DemoLLM(delay=0), CompletionRequest(messages=request.messages, continue_from=full)
    )

    assert len(chunks) == 1
    assert isinstance(chunks[0], UsageReport)


async def test_a_paced_stream_can_be_cancelled_between_tokens() -> None:
    llm = DemoLLM(delay=60)  # a minute a token: only a cancellation ends this test in time
    received: list[LLMChunk] = []

    async def consume() -> None:
        async for chunk in llm.stream(conversation(("user", "hello"))):
            received.append(chunk)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(WAIT):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert received == []


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        DemoLLM(delay=-1)
