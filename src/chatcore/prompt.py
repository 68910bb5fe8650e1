"""Building the prompt: the system prompt, the user's context, and as much recent history of
the conversation as fits the token budget (newest kept first). The history is the
conversation's active path only: another version of a message (an edit, an earlier answer)
never reaches a prompt."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from chatcore.ports import CompletionRequest, PromptMessage
from chatcore.view import ChatMessage, Conversation, Profile

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a chat application. Answer clearly and concisely, "
    "using Markdown where it helps."
)

# Per-message overhead of chat formats (role markers and separators), in tokens.
_MESSAGE_OVERHEAD = 4
# About four characters of English a token, whatever the provider's tokenizer.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True, slots=True)
class PromptSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_prompt_tokens: int = 6000
    chars_per_token: float = CHARS_PER_TOKEN


def estimate_text_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """The tokens of ``text`` when no tokenizer counted them (a provider-independent rule of
    thumb), e.g. a completion whose provider reported no usage."""
    return math.ceil(len(text) / chars_per_token)


def estimate_message_tokens(content: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """What a message with this content costs in a prompt: its text, plus the role markers
    and separators that chat formats add around every message."""
    return _MESSAGE_OVERHEAD + estimate_text_tokens(content, chars_per_token)


def system_text(settings: PromptSettings, profile: Profile) -> str:
    parts = [settings.system_prompt.strip()]
    if profile.display_name:
        parts.append(f"The user's name is {profile.display_name}.")
    if profile.language:
        parts.append(f"Always reply in {profile.language}.")
    return "\n\n".join(p for p in parts if p)


def _as_prompt(message: ChatMessage) -> PromptMessage | None:
    if message.role == "user":
        return PromptMessage(role="user", content=message.text)
    if message.status == "failed" or not message.text.strip():
        return None
    return PromptMessage(role="assistant", content=message.text)


# What a prompt made of one history message: its text (the string object itself), its status,
# and the prompt message (``None``: left out of prompts).
_Used = tuple[str, str, PromptMessage | None]


class PromptMemo:
    """The prompt messages of the last prompts built for a few conversations, so that the
    next turn of one reuses them instead of building one per message of its history again
    (that cost grew with the session: a third of a worker's CPU in a long benchmark).

    A message is reused only for a history message with the same id, status and the very
    same text (the same string object: views share the parts the fold never changes), so a
    view decoded anew just builds them again. The memo keeps no history message itself (a
    reply holds its turn, not the session), only the prompt messages a prompt used and their
    texts: bounded by the prompt's budget times ``conversations``."""

    __slots__ = ("_kept", "conversations")

    def __init__(self, conversations: int = 256) -> None:
        if conversations < 1:
            raise ValueError("conversations must be at least 1")
        self.conversations = conversations
        self._kept: OrderedDict[str, dict[str, _Used]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def previous(self, conversation_id: str) -> dict[str, _Used]:
        return self._kept.get(conversation_id) or {}

    def keep(self, conversation_id: str, used: dict[str, _Used]) -> None:
        self._kept[conversation_id] = used
        self._kept.move_to_end(conversation_id)
        while len(self._kept) > self.conversations:
            self._kept.popitem(last=False)


def build_prompt(
    conversation: Conversation,
    message_id: str,
    profile: Profile,
    settings: PromptSettings,
    memo: PromptMemo | None = None,
) -> CompletionRequest:
    """The request that answers ``message_id``: the active path up to and including that
    message (a turn waiting for its answer is always the end of the active path). With a
    ``memo``, the prompt messages of the conversation's last prompt are reused."""
    history: list[ChatMessage] = []
    for msg in conversation.messages:
        history.append(msg)
        if msg.message_id == message_id:
            break
    else:
        raise ValueError(
            f"message {message_id} is not in conversation {conversation.conversation_id}"
        )

    system = PromptMessage(role="system", content=system_text(settings, profile))
    budget = settings.max_prompt_tokens - estimate_message_tokens(
        system.content, settings.chars_per_token
    )

    question = history[-1]
    kept: list[PromptMessage] = []
    # The question itself always goes in, cut from the front if it alone exceeds the budget.
    q_text = question.text
    max_chars = max(1, int(max(budget - _MESSAGE_OVERHEAD, 1) * settings.chars_per_token))
    if len(q_text) > max_chars:
        q_text = q_text[-max_chars:]
    kept.append(PromptMessage(role="user", content=q_text))
    budget -= estimate_message_tokens(q_text, settings.chars_per_token)

    before = memo.previous(conversation.conversation_id) if memo is not None else {}
    used: dict[str, _Used] = {}
    for msg in reversed(history[:-1]):
        hit = before.get(msg.message_id)
        if hit is not None and hit[0] is msg.text and hit[1] == msg.status:
            pm = hit[2]
        else:
            pm = _as_prompt(msg)
        used[msg.message_id] = (msg.text, msg.status, pm)
        if pm is None:
            continue
        cost = estimate_message_tokens(pm.content, settings.chars_per_token)
        if cost > budget:
            break
        kept.append(pm)
        budget -= cost
    if memo is not None:
        memo.keep(conversation.conversation_id, used)
    kept.reverse()
    # Chat APIs expect the first non-system message to come from the user.
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return CompletionRequest(messages=(system, *kept))
