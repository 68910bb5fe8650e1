"""Models the worker-process tests load with ``CHATCORE_WORKER__LLM_FACTORY``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from chatcore.ports import LLM, CompletionRequest, LLMChunk
from chatcore_adapters.llm import DemoLLM


class CrashOnPoison:
    """The offline demo model, except that a message containing "poison" makes it crash with
    an ordinary exception after its first words, as a bug in a model adapter would (not an
    ``LLMError``, which the reply would report as a failure at once)."""

    def __init__(self) -> None:
        self._demo = DemoLLM(delay=0.01)

    @property
    def name(self) -> str:
        return "crash-on-poison"

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        asked = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        said = 0
        async for chunk in self._demo.stream(request):
            if "poison" in asked and said == 3:
                raise RuntimeError("the model adapter choked on this message")
            said += 1
            yield chunk


def crash_on_poison() -> LLM:
    return CrashOnPoison()
