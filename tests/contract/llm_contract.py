"""The contract of the LLM port, checked against every adapter.

A subclass named ``Test...`` provides the ``subject`` fixture (an :class:`LLMSubject`); this
base class is not collected on its own. The contract:

* a stream is text deltas (with, possibly, model switches), then exactly one usage report,
  then its end; every delta is a non-empty string naming its model;
* ``aclose()`` mid-stream, or cancelling the consuming task, stops it (and the upstream call);
* ``continue_from`` is honoured: the answer goes on after the text already said, without
  saying it again;
* failures are :class:`LLMError` with a known kind and a readable message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from chatcore.errors import LLMError
from chatcore.ports import (
    LLM,
    CompletionRequest,
    LLMChunk,
    ModelSwitch,
    PromptMessage,
    TextDelta,
    UsageReport,
)

WAIT = 10.0  # the longest any single step of these tests may take


async def _nothing() -> None:
    return None


@dataclass
class LLMSubject:
    """An adapter under test.

    ``llm`` answers promptly; ``slow`` is the same kind of model streaming slowly (so a test
    can stop it mid-answer); ``stopped()`` returns once the upstream call of the last
    ``slow`` stream has been stopped (waiting at most a few seconds); ``failing`` is a
    model that fails, or ``None`` when the adapter cannot fail.
    """

    llm: LLM
    slow: LLM
    stopped: Callable[[], Awaitable[None]] = _nothing
    failing: LLM | None = None


def request(
    question: str = "What is an event log?", *, continue_from: str = ""
) -> CompletionRequest:
    return CompletionRequest(
        messages=(
            PromptMessage(role="system", content="You are a helpful assistant."),
            PromptMessage(role="user", content=question),
        ),
        continue_from=continue_from,
    )


async def collect(stream: AsyncIterator[LLMChunk]) -> list[LLMChunk]:
    chunks: list[LLMChunk] = []
    async with asyncio.timeout(WAIT):
        async for chunk in stream:
            chunks.append(chunk)
    return chunks


def text_of(chunks: list[LLMChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


class LLMContract:
    """The checks; subclasses supply ``subject``."""

    @pytest.fixture
    def subject(self) -> LLMSubject:
        raise NotImplementedError("a contract test class must provide the subject fixture")

    def test_it_is_an_llm_with_a_name(self, subject: LLMSubject) -> None:
        assert isinstance(subject.llm, LLM)
        assert isinstance(subject.llm.name, str)
        assert subject.llm.name.strip()

    async def test_deltas_then_exactly_one_usage_report_then_the_end(
        self, subject: LLMSubject
    ) -> None:
        stream = subject.llm.stream(request())
        chunks = await collect(stream)

        assert chunks, "the stream produced nothing"
        assert isinstance(chunks[-1], UsageReport), f"last chunk is {chunks[-1]!r}"
        assert sum(isinstance(c, UsageReport) for c in chunks) == 1
        body = chunks[:-1]
        assert all(isinstance(c, TextDelta | ModelSwitch) for c in body)
        deltas = [c for c in body if isinstance(c, TextDelta)]
        assert deltas, "no text at all"
        for delta in deltas:
            assert isinstance(delta.text, str)
            assert delta.text, "an empty delta"
            assert delta.model.strip()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    async def test_usage_counts_the_answer(self, subject: LLMSubject) -> None:
        chunks = await collect(subject.llm.stream(request()))
        report = chunks[-1]
        assert isinstance(report, UsageReport)
        assert report.model.strip()
        assert report.usage.prompt_tokens > 0
        assert report.usage.completion_tokens > 0
        assert report.usage.cost_usd is None or report.usage.cost_usd >= 0

    async def test_the_same_question_gets_a_text_about_it(self, subject: LLMSubject) -> None:
        first = text_of(await collect(subject.llm.stream(request("Tell me about lighthouses"))))
        assert first.strip()

    async def test_concurrent_streams_do_not_mix(self, subject: LLMSubject) -> None:
        questions = ["First question about owls", "Second question about rivers"]
        alone = [text_of(await collect(subject.llm.stream(request(q)))) for q in questions]
        together = await asyncio.gather(
            *(collect(subject.llm.stream(request(q))) for q in questions)
        )
        assert [text_of(chunks) for chunks in together] == alone

    async def test_aclose_mid_stream_stops_it(self, subject: LLMSubject) -> None:
        stream = subject.slow.stream(request())
        assert isinstance(stream, AsyncGenerator), "the port promises aclose()"
        async with asyncio.timeout(WAIT):
            first = await anext(stream)
            while not isinstance(first, TextDelta):
                first = await anext(stream)
            await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        async with asyncio.timeout(WAIT):
            await subject.stopped()

    async def test_cancelling_the_consumer_stops_it(self, subject: LLMSubject) -> None:
        started = asyncio.Event()
        received: list[LLMChunk] = []

        async def consume() -> None:
            async for chunk in subject.slow.stream(request()):
                received.append(chunk)
                started.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(WAIT):
            await started.wait()
        task.cancel()
        async with asyncio.timeout(WAIT):
            with pytest.raises(asyncio.CancelledError):
                await task
            await subject.stopped()
        assert not any(isinstance(c, UsageReport) for c in received)

    async def test_continue_from_goes_on_without_repeating(self, subject: LLMSubject) -> None:
        full_chunks = await collect(subject.llm.stream(request()))
        deltas = [c.text for c in full_chunks if isinstance(c, TextDelta)]
        assert len(deltas) >= 4, "the answer is too short to cut"
        said = "".join(deltas[:3])

        rest = text_of(await collect(subject.llm.stream(request(continue_from=said))))

        assert rest.strip(), "nothing after the text already said"
        assert not rest.lstrip().startswith(said.strip()), "it started over"
        assert said + rest == text_of(full_chunks)

    async def test_failures_are_llm_errors_with_a_known_kind(self, subject: LLMSubject) -> None:
        if subject.failing is None:
            pytest.skip("this model cannot fail")
        with pytest.raises(LLMError) as caught:
            await collect(subject.failing.stream(request()))
        assert caught.value.kind in LLMError.KINDS
        assert caught.value.message.strip()
