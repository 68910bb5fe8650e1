"""Chat models through LiteLLM: OpenAI, Anthropic, Groq, Ollama and any OpenAI-compatible server.

This module is the LiteLLM call itself: loading LiteLLM, the messages and options of one
streamed call, reading its chunks, credentials and prices. The retries and fallbacks around the
calls are :mod:`chatcore_adapters.llm.failover`'s, what a failure means is
:mod:`chatcore_adapters.llm.errors`'s.

LiteLLM is imported lazily, the first time a model is actually called (or by
:meth:`LiteLLMModel.preload`): the import costs seconds of CPU and ~250 MiB of memory, which
the API process and the demo model never pay. LiteLLM's own retries and fallbacks are switched
off: the failover does them, so they behave as tested and show in our logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from chatcore.errors import LLMError
from chatcore.ports import CompletionRequest, LLMChunk, PromptMessage
from chatcore_adapters.llm.errors import (
    CONTENT_POLICY,
    USER_MESSAGES,
    classify_error,
    retry_after,
)
from chatcore_adapters.llm.failover import AttemptFailed, CallRecord, stream_with_failover
from chatcore_adapters.llm.redaction import redact, secrets_in_environment
from chatcore_adapters.llm.settings import LLMSettings, ModelSettings

logger = logging.getLogger(__name__)

# Sent with the text said so far when another call must carry on with it.
CONTINUE_INSTRUCTION = (
    "Your reply to the last user message was cut off by a technical problem; its beginning "
    "is the assistant message of this conversation. Continue it from exactly where it "
    "stops. Do not repeat any of it, do not start over and do not mention the interruption: "
    "write only what comes next."
)
# Providers whose API continues a final assistant message as the start of the reply
# ("prefill"): for them that message goes last, after the instruction.
_PREFILL_PROVIDERS = frozenset({"anthropic"})
# Providers that need a key and take it from the environment only: a missing key is a
# configuration error, reported as such before any request.
_KEYED_PROVIDERS = frozenset(
    {
        *("openai", "anthropic", "groq", "mistral", "deepseek", "together_ai", "xai"),
        *("fireworks_ai", "openrouter", "cohere", "cohere_chat", "gemini", "perplexity"),
    }
)

# --- loading LiteLLM ------------------------------------------------------------------------

_load_lock = threading.Lock()
_litellm: list[Any] = []  # the loaded module, once there is one


def load_litellm() -> Any:
    """Import and configure LiteLLM once per process (blocking: seconds of CPU).

    The price map is read from the copy shipped with LiteLLM (no download at import), the
    import's deprecation warnings are silenced (they are LiteLLM's, not ours), and LiteLLM's
    "get help" banner printed on errors is switched off.
    """
    with _load_lock:
        if not _litellm:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            with warnings.catch_warnings():
                # LiteLLM's import and first call build pydantic schemas and lazily import
                # hundreds of modules, which warn about LiteLLM's own code (deprecated
                # pydantic APIs, ReadOnly TypedDict items): nothing we can act on.
                warnings.simplefilter("ignore")
                try:
                    module: Any = importlib.import_module("litellm")
                except ModuleNotFoundError as exc:
                    if exc.name != "litellm":
                        raise
                    raise ModuleNotFoundError(
                        "LiteLLM is not installed; models other than the demo need the llm "
                        "extra: pip install 'chatcore[llm]'",
                        name="litellm",
                    ) from exc
                module.suppress_debug_info = True
                if hasattr(module, "telemetry"):
                    module.telemetry = False
                if "LITELLM_LOG" not in os.environ:
                    # LiteLLM logs every call at INFO; keep its warnings and errors only.
                    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
                        logging.getLogger(name).setLevel(logging.WARNING)
                _warm_up(module)
            _litellm.append(module)
        return _litellm[0]


def _warm_up(litellm: Any) -> None:
    """One offline streamed call (LiteLLM's ``mock_response``): it does the lazy imports and
    schema building of a first call now, instead of during the first real answer."""
    try:
        stream = litellm.completion(
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": "warm-up"}],
            mock_response="ok",
            stream=True,
            stream_options={"include_usage": True},
            api_key="not-used",
            num_retries=0,
            max_retries=0,
        )
        for _ in stream:
            pass
    except Exception:
        logger.debug(
            "LiteLLM warm-up call failed; the first real call will be slower", exc_info=True
        )


async def _load_litellm_async() -> Any:
    if _litellm:
        return _litellm[0]
    try:
        return await asyncio.to_thread(load_litellm)
    except ImportError:
        logger.exception("LiteLLM cannot be imported", extra={"llm_error_kind": "internal"})
        raise LLMError("internal", USER_MESSAGES["internal"], retryable=False) from None


# --- the adapter ------------------------------------------------------------------------------


class LiteLLMModel:
    """The :class:`chatcore.ports.LLM` port over LiteLLM, with our retries and fallbacks."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if settings.is_demo:
            raise ValueError("LiteLLMModel needs a LiteLLM model; build_llm() handles the demo")
        self._settings = settings
        self._chain: tuple[ModelSettings, ...] = settings.chain
        self._sleep = sleep

    @property
    def name(self) -> str:
        return self._settings.model

    @property
    def models(self) -> tuple[str, ...]:
        """The models tried, in order: the primary, then the fallbacks."""
        return tuple(target.model for target in self._chain)

    def __repr__(self) -> str:
        return f"LiteLLMModel(models={list(self.models)!r})"

    def preload(self) -> None:
        """Import LiteLLM now and check that LiteLLM knows every model's provider and that
        the API keys they need are in the environment (raises :class:`ValueError`).

        For a worker's start-up, so a typo fails there and not at the first message.
        """
        litellm = load_litellm()
        for target in self._chain:
            try:
                litellm.get_llm_provider(model=target.model, api_base=target.api_base)
            except Exception as exc:
                raise ValueError(
                    f"LiteLLM does not know the provider of model {target.model!r}: "
                    "write it as provider/model, e.g. openai/gpt-4o-mini"
                ) from exc
            problem = self._missing_credentials(target)
            if problem is not None:
                raise ValueError(f"model {target.model!r} has no API key: {problem}")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        litellm = await _load_litellm_async()

        def call(target: ModelSettings, said: str, record: CallRecord) -> AsyncGenerator[str, None]:
            return self._call(litellm, target, request.messages, said, record)

        def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
            return _price(litellm, model, prompt_tokens, completion_tokens)

        chunks = stream_with_failover(
            self._chain,
            request.continue_from,
            call,
            price=price,
            redact=self._redact,
            sleep=self._sleep,
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    # --- one call -----------------------------------------------------------------------------

    async def _call(
        self,
        litellm: Any,
        target: ModelSettings,
        messages: tuple[PromptMessage, ...],
        said: str,
        record: CallRecord,
    ) -> AsyncGenerator[str, None]:
        """The text of one streamed call; fills ``record`` as it goes.

        Raises :class:`AttemptFailed`. Whatever happens, the provider stream is closed.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        final_deadline = started + target.timeout
        first_deadline = min(started + target.first_token_timeout, final_deadline)
        payload = self._payload(target, messages, said)
        record.prompt = "".join(m["content"] for m in payload)
        response: Any = None
        try:
            kwargs = self._call_options(target, payload)
            async with asyncio.timeout_at(first_deadline):
                response = await litellm.acompletion(**kwargs)
            chunks = response.__aiter__()
            while True:
                async with asyncio.timeout_at(
                    final_deadline if record.text_received else first_deadline
                ):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                text = _read_chunk(chunk, record)
                if text:
                    record.text_received = True
                    yield text
        except TimeoutError as exc:
            detail = (
                f"no token within first_token_timeout={target.first_token_timeout}s"
                if not record.text_received
                else f"not finished within timeout={target.timeout}s"
            )
            raise AttemptFailed(LLMError("timeout", USER_MESSAGES["timeout"]), detail) from exc
        except AttemptFailed:
            raise
        except Exception as exc:
            raise AttemptFailed(
                classify_error(exc), f"{type(exc).__name__}: {exc}", retry_after(exc)
            ) from exc
        finally:
            if response is not None and hasattr(response, "aclose"):
                try:
                    await response.aclose()
                except Exception:
                    logger.debug("closing the provider stream failed", exc_info=True)
        if not record.text_received and record.finish_reason == "content_filter":
            raise AttemptFailed(
                LLMError("bad_request", CONTENT_POLICY), "finish_reason=content_filter"
            )

    def _payload(
        self, target: ModelSettings, messages: tuple[PromptMessage, ...], said: str
    ) -> list[dict[str, str]]:
        payload: list[dict[str, str]] = []
        if self._settings.system_prompt:
            payload.append({"role": "system", "content": self._settings.system_prompt})
        payload.extend({"role": m.role, "content": m.content} for m in messages)
        if said.strip():
            # Trailing whitespace is trimmed: a prefill may not end with it (Anthropic).
            partial = {"role": "assistant", "content": said.rstrip()}
            instruction = {"role": "system", "content": CONTINUE_INSTRUCTION}
            if _provider(target.model) in _PREFILL_PROVIDERS:
                payload += [instruction, partial]
            else:
                payload += [partial, instruction]
        return payload

    def _call_options(self, target: ModelSettings, payload: list[dict[str, str]]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "model": target.model,
            "messages": payload,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Retries and fallbacks are ours: LiteLLM and the provider SDKs must not retry.
            "num_retries": 0,
            "max_retries": 0,
            # A safety net only: our own deadlines fire first.
            "timeout": target.timeout + 1.0,
            "drop_params": True,
        }
        if target.api_base is not None:
            options["api_base"] = target.api_base
        problem = self._missing_credentials(target)
        if problem is not None:
            raise AttemptFailed(LLMError("auth", USER_MESSAGES["auth"], retryable=False), problem)
        if target.api_key_env is not None:
            options["api_key"] = os.environ[target.api_key_env]
        if target.temperature is not None:
            options["temperature"] = target.temperature
        if target.max_tokens is not None:
            options["max_tokens"] = target.max_tokens
        return options

    def _missing_credentials(self, target: ModelSettings) -> str | None:
        """What is missing for ``target``'s key, or ``None`` (names only, never values)."""
        if target.api_key_env is not None:
            if os.environ.get(target.api_key_env):
                return None
            return f"environment variable {target.api_key_env} (api_key_env) is not set"
        if _provider(target.model) not in _KEYED_PROVIDERS or not _litellm:
            return None
        try:
            report = _litellm[0].validate_environment(model=target.model)
            missing = [str(name) for name in report.get("missing_keys", ())]
        except Exception:  # noqa: BLE001 - no verdict: let the call itself find out
            return None
        keys = [name for name in missing if name.endswith(("_KEY", "_TOKEN"))]
        if not keys:
            return None
        return (
            f"environment variable {' or '.join(keys)} is not set "
            f"(or name another one with api_key_env)"
        )

    def _redact(self, text: str) -> str:
        names = [t.api_key_env for t in self._chain if t.api_key_env]
        return redact(text, secrets_in_environment(names))


def _provider(model: str) -> str:
    """The provider part of a LiteLLM model string (``openai`` for ``openai/gpt-4o-mini``)."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def _read_chunk(chunk: Any, record: CallRecord) -> str:
    """The text of a streamed chunk; its usage and finish reason go into ``record``."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            record.usage = (max(0, prompt_tokens), max(0, completion_tokens))
    choices = getattr(chunk, "choices", None) or ()
    if not choices:
        return ""
    choice = choices[0]
    finish_reason = getattr(choice, "finish_reason", None)
    if isinstance(finish_reason, str):
        record.finish_reason = finish_reason
    content = getattr(getattr(choice, "delta", None), "content", None)
    return content if isinstance(content, str) else ""


def _price(litellm: Any, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost in USD from LiteLLM's price map; ``None`` when it does not know the model."""
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        cost = float(prompt_cost) + float(completion_cost)
    except Exception:  # noqa: BLE001 - an unknown price is no error: the cost is just unknown
        return None
    return cost if cost >= 0 else None
