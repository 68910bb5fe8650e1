"""Chat models through LiteLLM: OpenAI, Anthropic, Groq, Ollama and any OpenAI-compatible server.

LiteLLM is imported lazily, the first time a model is actually called (or by
:meth:`LiteLLMModel.preload`): the import costs seconds of CPU and ~200 MB, which the API
process and the demo model never pay. LiteLLM's own retries and fallbacks are switched off;
this adapter does them itself so that their behaviour is ours, tested and observable:

* before the first token, a retryable failure (timeout, 429, 5xx, connection) is retried
  with exponential backoff and jitter (honouring ``Retry-After``), then the next fallback
  model is tried;
* after some text, a failure (connection lost, error event, stalled stream) moves on to the
  next fallback, asked to continue after the text said so far; a :class:`ModelSwitch` is
  yielded before the new model's first delta and every delta names the model that wrote it;
* when every model has failed, :class:`LLMError` is raised with a message a user can read.
  Provider errors (which may quote keys) go only to the log, redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import random
import re
import threading
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chatcore.errors import LLMError
from chatcore.events import Usage
from chatcore.ports import (
    CompletionRequest,
    LLMChunk,
    ModelSwitch,
    PromptMessage,
    TextDelta,
    UsageReport,
)
from chatcore_adapters.llm.demo import estimate_tokens
from chatcore_adapters.llm.settings import LLMSettings, ModelSettings

logger = logging.getLogger(__name__)

# Sent after the text said so far when another attempt must carry on with it.
CONTINUE_INSTRUCTION = (
    "Your previous message above is the beginning of your reply; it was cut off by a "
    "technical problem. Continue it from exactly where it stops. Do not repeat any of it, "
    "do not start over and do not mention the interruption: write only what comes next."
)

USER_MESSAGES = {
    "timeout": "The model took too long to answer; please try again.",
    "rate_limited": "The model provider is rate-limiting requests; please try again shortly.",
    "auth": (
        "The model provider did not accept the configured credentials; "
        "an administrator needs to check them."
    ),
    "unavailable": "The model provider is unavailable right now; please try again later.",
    "bad_request": "The model provider could not process this request.",
    "cancelled": "The answer was cancelled.",
    "internal": "Something went wrong while generating the answer.",
}
_CONTEXT_TOO_LONG = (
    "The conversation is too long for the model; start a new conversation or send a "
    "shorter message."
)
_CONTENT_POLICY = "The model provider declined to answer this request (content policy)."
_BILLING = "The model provider account cannot be used right now (billing or quota)."

_SWITCH_REASONS = {
    "timeout": "timed out",
    "rate_limited": "rate-limited",
    "auth": "credentials rejected",
    "unavailable": "unavailable",
    "bad_request": "request refused",
    "cancelled": "cancelled",
    "internal": "failed",
}

_MAX_BACKOFF = 30.0

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
                module: Any = importlib.import_module("litellm")
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


# --- errors -----------------------------------------------------------------------------------

_TIMEOUT_TYPES = frozenset(
    {"Timeout", "APITimeoutError", "TimeoutException", "TimeoutError", "ServerTimeoutError"}
)
_CONNECTION_TYPES = frozenset(
    {
        "APIConnectionError",
        "ServiceUnavailableError",
        "BadGatewayError",
        "InternalServerError",
        "TransportError",
        "ClientError",
        "ConnectionError",
        "OSError",
    }
)


def classify_error(exc: BaseException) -> LLMError:
    """The :class:`LLMError` for an exception of LiteLLM, its provider SDKs, httpx or aiohttp.

    The message is always one of the fixed user-safe texts, never the provider's.
    """
    if isinstance(exc, LLMError):
        return exc
    # A stream failing part-way comes wrapped (MidStreamFallbackError): judge its cause.
    cause = getattr(exc, "original_exception", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None)
    if "ContextWindowExceededError" in names:
        return LLMError("bad_request", _CONTEXT_TOO_LONG)
    if "ContentPolicyViolationError" in names:
        return LLMError("bad_request", _CONTENT_POLICY)
    if names & _TIMEOUT_TYPES:
        return LLMError("timeout", USER_MESSAGES["timeout"])
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 429:
            return LLMError("rate_limited", USER_MESSAGES["rate_limited"])
        if status in {401, 403}:
            return LLMError("auth", USER_MESSAGES["auth"])
        if status == 402:
            return LLMError("auth", _BILLING)
        if status == 408:
            return LLMError("timeout", USER_MESSAGES["timeout"])
        if 400 <= status < 500:
            return LLMError("bad_request", USER_MESSAGES["bad_request"])
        if status >= 500:
            return LLMError("unavailable", USER_MESSAGES["unavailable"])
    if names & _CONNECTION_TYPES:
        return LLMError("unavailable", USER_MESSAGES["unavailable"])
    return LLMError("internal", USER_MESSAGES["internal"])


def _retry_after(exc: BaseException | None) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After``), when it said so in seconds."""
    for candidate in (exc, getattr(exc, "original_exception", None)):
        for headers in (
            getattr(candidate, "litellm_response_headers", None),  # where LiteLLM keeps them
            getattr(candidate, "headers", None),
            getattr(getattr(candidate, "response", None), "headers", None),
        ):
            # An HTTP date, or anything unreadable, is ignored: the backoff applies.
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                value = headers.get("retry-after")  # type: ignore[union-attr]
                if value is not None:
                    return max(0.0, float(value))
    return None


_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-~+/=]{6,}"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{6,}"),
)
_SECRET_ENV_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET", "_PASSWORD")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, nor anything shaped like an API key or token."""
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "[REDACTED]")
    text = _SECRET_PATTERNS[0].sub("[REDACTED]", text)
    text = _SECRET_PATTERNS[1].sub("Bearer [REDACTED]", text)
    return _SECRET_PATTERNS[2].sub(r"\1[REDACTED]", text)


def _secrets_in_environment(names: Iterable[str]) -> list[str]:
    wanted = set(names)
    return [
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and (name in wanted or name.upper().endswith(_SECRET_ENV_SUFFIXES))
    ]


# --- continuing a cut-off answer --------------------------------------------------------------


class RepeatGuard:
    """Drops the part of a continuation that repeats text already said.

    Asked to continue, models sometimes start over, or repeat the last words before going on.
    The guard holds back the start of the continuation (while it still matches the start of
    the said text, or up to ``window`` characters), then drops a restatement of all the said
    text or an overlap of at least ``min_overlap`` characters with its end.
    """

    def __init__(self, said: str, *, window: int = 160, min_overlap: int = 16) -> None:
        self._said = said
        self._window = window
        self._min_overlap = min_overlap
        self._buffer = ""
        self._open = not said

    def feed(self, text: str) -> str:
        """Text to pass on now (possibly empty) for the next piece of the continuation."""
        if self._open:
            return text
        self._buffer += text
        if self._said.startswith(self._buffer):
            return ""  # so far it restates the said text: wait and see
        if self._buffer.startswith(self._said) or len(self._buffer) >= self._window:
            return self._decide()
        return ""

    def flush(self) -> str:
        """What is still held back, at the end of the continuation."""
        return "" if self._open else self._decide()

    def _decide(self) -> str:
        self._open = True
        buffer, said, self._buffer = self._buffer, self._said, ""
        if buffer.startswith(said):
            out = buffer[len(said) :]
        elif said.startswith(buffer):
            out = ""
        else:
            out = buffer
            for size in range(min(len(buffer), len(said)), self._min_overlap - 1, -1):
                if said.endswith(buffer[:size]):
                    out = buffer[size:]
                    break
        return out.lstrip() if said[-1:].isspace() else out


# --- the adapter ------------------------------------------------------------------------------


class _AttemptFailed(Exception):
    """One call failed: the error to report, the raw detail for the log, and how long the
    provider asked us to wait before trying again (if it did)."""

    def __init__(self, error: LLMError, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class _Spent:
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None


@dataclass
class _Run:
    """What one call to one model produced."""

    prompt_chars: int = 0
    text: str = ""
    text_received: bool = False
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None


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
        """Import LiteLLM now and check every model names a provider LiteLLM knows.

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

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        litellm = await _load_litellm_async()
        said = request.continue_from
        speaking = 0  # index in the chain of the model whose text the stream is showing
        switch_reason = ""
        spent: list[_Spent] = []
        failures: list[LLMError] = []
        retry_after: float | None = None
        index = attempt = 0
        while index < len(self._chain):
            target = self._chain[index]
            if attempt:
                await self._sleep(self._backoff(target, attempt, retry_after))
            run = _Run()
            try:
                pieces = self._call(litellm, target, request.messages, said, run)
                async with contextlib.aclosing(pieces):
                    async for piece in pieces:
                        if index != speaking:
                            before = self._chain[speaking].model
                            logger.info(
                                "LLM answer continues on %s after %s failed",
                                target.model,
                                before,
                                extra={
                                    "llm_from_model": before,
                                    "llm_to_model": target.model,
                                    "llm_chars_said": len(said),
                                },
                            )
                            yield ModelSwitch(
                                from_model=before, to_model=target.model, reason=switch_reason
                            )
                            speaking = index
                        said += piece
                        yield TextDelta(text=piece, model=target.model)
            except _AttemptFailed as failed:
                error = failed.error
                failures.append(error)
                retry_after = failed.retry_after
                if run.text_received:
                    spent.append(self._spent(litellm, target, run))
                mid_stream = bool(run.text)
                last = index == len(self._chain) - 1
                logger.warning(
                    "LLM call to %s failed (%s): %s",
                    target.model,
                    error.kind,
                    self._redact(failed.detail),
                    extra={
                        "llm_model": target.model,
                        "llm_attempt": attempt + 1,
                        "llm_error_kind": error.kind,
                        "llm_error_detail": self._redact(failed.detail),
                        "llm_mid_stream": mid_stream,
                        "llm_chars_said": len(said),
                    },
                )
                switch_reason = _SWITCH_REASONS[error.kind] + (
                    " mid-answer" if mid_stream else " before answering"
                )
                if error.retryable and attempt < target.retries and (not mid_stream or last):
                    attempt += 1
                else:
                    index, attempt = index + 1, 0
                continue
            spent.append(self._spent(litellm, target, run))
            yield UsageReport(usage=_add_up(spent), model=target.model)
            return
        raise self._give_up(failures)

    # --- one call -----------------------------------------------------------------------------

    async def _call(
        self,
        litellm: Any,
        target: ModelSettings,
        messages: tuple[PromptMessage, ...],
        said: str,
        run: _Run,
    ) -> AsyncGenerator[str, None]:
        """The text of one streamed call, after the repeat guard; fills ``run`` as it goes.

        Raises :class:`_AttemptFailed`. Whatever happens, the provider stream is closed.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        final_deadline = started + target.timeout
        first_deadline = min(started + target.first_token_timeout, final_deadline)
        payload = self._payload(messages, said)
        run.prompt_chars = sum(len(m["content"]) for m in payload)
        guard = RepeatGuard(said)
        response: Any = None
        try:
            kwargs = self._call_options(target, payload)
            async with asyncio.timeout_at(first_deadline):
                response = await litellm.acompletion(**kwargs)
            chunks = response.__aiter__()
            while True:
                async with asyncio.timeout_at(
                    final_deadline if run.text_received else first_deadline
                ):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                text = _read_chunk(chunk, run)
                if text:
                    run.text_received = True
                    out = guard.feed(text)
                    if out:
                        run.text += out
                        yield out
            out = guard.flush()
            if out:
                run.text += out
                yield out
        except TimeoutError as exc:
            detail = (
                f"no token within first_token_timeout={target.first_token_timeout}s"
                if not run.text_received
                else f"not finished within timeout={target.timeout}s"
            )
            raise _AttemptFailed(LLMError("timeout", USER_MESSAGES["timeout"]), detail) from exc
        except _AttemptFailed:
            raise
        except Exception as exc:
            raise _AttemptFailed(
                classify_error(exc), f"{type(exc).__name__}: {exc}", _retry_after(exc)
            ) from exc
        finally:
            if response is not None and hasattr(response, "aclose"):
                try:
                    await response.aclose()
                except Exception:
                    logger.debug("closing the provider stream failed", exc_info=True)
        if not run.text_received and run.finish_reason == "content_filter":
            raise _AttemptFailed(
                LLMError("bad_request", _CONTENT_POLICY), "finish_reason=content_filter"
            )

    def _payload(self, messages: tuple[PromptMessage, ...], said: str) -> list[dict[str, str]]:
        payload: list[dict[str, str]] = []
        if self._settings.system_prompt:
            payload.append({"role": "system", "content": self._settings.system_prompt})
        payload.extend({"role": m.role, "content": m.content} for m in messages)
        if said:
            # Some providers (Anthropic) treat a trailing assistant message as the start of
            # the reply to continue, and refuse one ending with whitespace.
            payload.append({"role": "assistant", "content": said.rstrip()})
            payload.append({"role": "system", "content": CONTINUE_INSTRUCTION})
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
        if target.api_key_env is not None:
            key = os.environ.get(target.api_key_env)
            if not key:
                raise _AttemptFailed(
                    LLMError("auth", USER_MESSAGES["auth"], retryable=False),
                    f"environment variable {target.api_key_env} (api_key_env) is not set",
                )
            options["api_key"] = key
        if target.temperature is not None:
            options["temperature"] = target.temperature
        if target.max_tokens is not None:
            options["max_tokens"] = target.max_tokens
        return options

    # --- retries, usage, errors ---------------------------------------------------------------

    @staticmethod
    def _backoff(target: ModelSettings, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (50-100% of the step), at least ``Retry-After``."""
        step = target.retry_backoff * 2.0 ** (attempt - 1)
        delay = step * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, _MAX_BACKOFF)

    @staticmethod
    def _spent(litellm: Any, target: ModelSettings, run: _Run) -> _Spent:
        """Tokens (and cost) of one call: as the provider counted them, else estimated."""
        if run.usage is not None:
            prompt_tokens, completion_tokens = run.usage
        else:
            prompt_tokens = math.ceil(run.prompt_chars / 4)
            completion_tokens = estimate_tokens(run.text)
        return _Spent(
            prompt_tokens,
            completion_tokens,
            _price(litellm, target.model, prompt_tokens, completion_tokens),
        )

    def _redact(self, text: str) -> str:
        names = [t.api_key_env for t in self._chain if t.api_key_env]
        return redact(text, _secrets_in_environment(names))

    def _give_up(self, failures: list[LLMError]) -> LLMError:
        last = failures[-1]
        if len(self._chain) == 1:
            return LLMError(last.kind, last.message, retryable=last.retryable)
        return LLMError(
            last.kind,
            f"None of the configured models could answer. {last.message}",
            retryable=any(f.retryable for f in failures),
        )


def _read_chunk(chunk: Any, run: _Run) -> str:
    """The text of a streamed chunk; its usage and finish reason go into ``run``."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
            run.usage = (max(0, prompt_tokens), max(0, completion_tokens))
    choices = getattr(chunk, "choices", None) or ()
    if not choices:
        return ""
    choice = choices[0]
    finish_reason = getattr(choice, "finish_reason", None)
    if isinstance(finish_reason, str):
        run.finish_reason = finish_reason
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


def _add_up(spent: list[_Spent]) -> Usage:
    costs = [s.cost_usd for s in spent if s.prompt_tokens or s.completion_tokens]
    return Usage(
        prompt_tokens=sum(s.prompt_tokens for s in spent),
        completion_tokens=sum(s.completion_tokens for s in spent),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
    )
