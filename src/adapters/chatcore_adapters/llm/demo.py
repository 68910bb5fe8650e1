"""The offline demo model: the default chat model, with no key, no network and no LiteLLM.

It cannot really answer questions. It streams, word by word at a chat-like pace, a
deterministic answer that quotes the question, explains what chatcore is and says how to
configure a real model, so a fresh install shows every moving part (streaming, resuming,
cancelling, failover bookkeeping) before anyone has an API key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from chatcore.events import Usage
from chatcore.ports import CompletionRequest, LLMChunk, PromptMessage, TextDelta, UsageReport
from chatcore.prompt import estimate_text_tokens

DEMO_NAME = "chatcore-demo (offline demo model)"
# Seconds between word-sized tokens: about 50 tokens a second, like a hosted model.
DEFAULT_DELAY = 0.035

_QUOTE_LIMIT = 200
# A name: a word, then at most three more capitalised words ("Ada", "Ada Lovelace").
_NAME = r"[^\W\d_][\w'\-]*(?:[ \t]+[A-ZÀ-ÖØ-Þ][\w'\-]*){0,3}"
# How a system prompt may say who the user is. The prompt builder is expected to write
# "The user's name is Ada."; the other phrasings let a hand-written system prompt work too.
_NAME_PATTERNS = tuple(
    re.compile(rf"(?i:{lead})[ \t]+[\"'\u201c\u2018]?(?P<name>{_NAME})")
    for lead in (
        r"\buser['\u2019]?s name is",
        r"\bthe user is (?:called|named)",
        r"\baddress (?:the user|them|him|her) as",
        r"\bcall (?:the user|them|him|her)",
    )
)
_CONFIG_WORDS = frozenset(
    {
        *("model", "models", "llm", "config", "configure", "configuration", "setup", "set"),
        *("key", "keys", "api", "provider", "real", "litellm"),
        *("openai", "anthropic", "groq", "ollama", "gpt", "claude", "llama"),
    }
)
_TOKEN = re.compile(r"\s*\S+")


def find_user_name(messages: tuple[PromptMessage, ...]) -> str | None:
    """The user's name, when a system message says it (e.g. "The user's name is Ada.")."""
    for message in messages:
        if message.role != "system":
            continue
        for pattern in _NAME_PATTERNS:
            match = pattern.search(message.content)
            if match:
                return match.group("name").strip()
    return None


def compose_answer(messages: tuple[PromptMessage, ...]) -> str:
    """The demo's whole answer to a conversation: the same conversation, the same answer."""
    user_messages = [m.content.strip() for m in messages if m.role == "user"]
    question = user_messages[-1] if user_messages else ""
    name = find_user_name(messages)

    greeting = f"Hi {name}!" if name else "Hi!"
    if not question:
        quote = "You have not asked anything yet."
    else:
        shown = " ".join(question.split())
        if len(shown) > _QUOTE_LIMIT:
            shown = shown[: _QUOTE_LIMIT - 1].rstrip() + "…"
        quote = f'You asked: "{shown}"'
    turn = len(user_messages)
    if turn > 1:
        quote += f" (your message number {turn} in this conversation)."
    elif question:
        quote += "."

    intro = (
        "I am the offline demo model of chatcore, so I cannot really answer that, "
        "but I can tell you what you are talking to."
    )
    about = (
        "chatcore is an event-sourced chat backend. Everything that happens in a session "
        "(each message, each streamed piece of a reply, a cancel, a model switch) is an "
        "event appended to that session's log, and what you see is rebuilt from the log. "
        "That is why streams are resumable: reload the page or lose the network, and the "
        "reply picks up from the last event you saw. Replies are written by background "
        "workers that survive crashes: if one dies mid-answer, another takes the message "
        "over and carries on."
    )
    configure = (
        "To talk to a real model, set CHATCORE_LLM__MODEL, for example "
        "CHATCORE_LLM__MODEL=openai/gpt-4o-mini with OPENAI_API_KEY in the environment, "
        "anthropic/claude-3-5-haiku-latest with ANTHROPIC_API_KEY, groq/llama-3.1-8b-instant "
        "with GROQ_API_KEY, or ollama_chat/llama3.2 for a local Ollama. Any OpenAI-compatible "
        "server works as openai/<model name> with CHATCORE_LLM__API_BASE set to its URL. "
        "Models to fall back on go in CHATCORE_LLM__FALLBACKS as a JSON list, for example "
        '[{"model": "groq/llama-3.1-8b-instant"}]. docs/llm.md has the details.'
    )
    asks_about_setup = bool(_CONFIG_WORDS & set(re.findall(r"[a-z]+", question.lower())))
    body = [configure, about] if asks_about_setup else [about, configure]
    return " ".join([greeting, quote, intro, *body])


def resume_offset(answer: str, said: str) -> int:
    """Where to go on in ``answer`` when ``said`` was already said.

    Normally ``said`` is the start of this same answer. When it is not (another model said
    it), skip as much of the answer and go on at the next word, so nothing is said twice.
    """
    if answer.startswith(said):
        return len(said)
    if not said.strip():
        return 0
    if len(said) >= len(answer):
        return len(answer)
    boundary = re.compile(r"\s").search(answer, len(said))
    return boundary.start() if boundary else len(answer)


class DemoLLM:
    """The offline demo model. ``delay`` is the pause between word-sized tokens (0: none);
    ``system_prompt`` (the operator's, from settings) is read as if sent first."""

    def __init__(self, *, delay: float = DEFAULT_DELAY, system_prompt: str | None = None) -> None:
        if delay < 0:
            raise ValueError("delay must not be negative")
        self._delay = delay
        self._system = (
            (PromptMessage(role="system", content=system_prompt),) if system_prompt else ()
        )

    @property
    def name(self) -> str:
        return DEMO_NAME

    def __repr__(self) -> str:
        return f"DemoLLM(delay={self._delay})"

    async def stream(self, request: CompletionRequest) -> AsyncIterator[LLMChunk]:
        answer = compose_answer(self._system + request.messages)
        start = resume_offset(answer, request.continue_from)
        rest = answer[start:]
        if not answer.startswith(request.continue_from) and request.continue_from[-1:].isspace():
            rest = rest.lstrip()
        for token in _TOKEN.findall(rest):
            # Always awaits, even with no delay, so a consumer can be cancelled between tokens.
            await asyncio.sleep(self._delay)
            yield TextDelta(text=token, model=DEMO_NAME)
        prompt = "".join(m.content for m in request.messages) + request.continue_from
        yield UsageReport(
            usage=Usage(
                prompt_tokens=estimate_text_tokens(prompt),
                completion_tokens=estimate_text_tokens(rest),
                cost_usd=0.0,
            ),
            model=DEMO_NAME,
        )
