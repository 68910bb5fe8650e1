"""Exporting a conversation: its active path as Markdown, or as JSON (the active path, or the
whole tree with every version of every message). Pure functions of a folded conversation;
the REST API serves them (``GET .../conversations/{id}/export``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chatcore.events import Usage
from chatcore.ids import parse_position
from chatcore.view import ChatMessage, Conversation, MessageStatus

EXPORT_FORMAT: Literal["chatcore.conversation"] = "chatcore.conversation"
EXPORT_VERSION = 1


class ExportedMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str
    parent_id: str | None = Field(
        description="The message this one follows (null: the first of a branch at the start)."
    )
    role: Literal["user", "assistant"]
    text: str
    at: datetime
    cursor: str = Field(description="The position of the event that finished the message.")
    status: MessageStatus
    in_reply_to: str | None = None
    models: list[str] = Field(default_factory=list)
    usage: Usage | None = None
    error_code: str | None = None
    error: str | None = None


class ExportedConversation(BaseModel):
    """A conversation as a JSON document. ``messages`` is the active path, oldest first; with
    ``tree``, every message of the conversation in the order recorded, and ``active_path``
    names the active path's messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["chatcore.conversation"] = EXPORT_FORMAT
    version: int = EXPORT_VERSION
    conversation_id: str
    title: str
    started_at: datetime
    exported_at: datetime
    tree: bool
    messages: list[ExportedMessage]
    active_path: list[str]
    replying: bool = Field(description="A reply was being written (it is not included).")


def _exported(msg: ChatMessage) -> ExportedMessage:
    return ExportedMessage(
        message_id=msg.message_id,
        parent_id=msg.parent_id,
        role=msg.role,
        text=msg.text,
        at=msg.at,
        cursor=msg.position,
        status=msg.status,
        in_reply_to=msg.in_reply_to,
        models=list(msg.models),
        usage=msg.usage,
        error_code=msg.error_code,
        error=msg.error,
    )


def export_json(
    conversation: Conversation, *, exported_at: datetime, tree: bool = False
) -> ExportedConversation:
    """The conversation as a JSON document: its active path, or (``tree``) every message."""
    if tree:
        every = sorted(
            (*conversation.messages, *conversation.branches),
            key=lambda m: parse_position(m.position),
        )
    else:
        every = list(conversation.messages)
    return ExportedConversation(
        conversation_id=conversation.conversation_id,
        title=conversation.title,
        started_at=conversation.started_at,
        exported_at=exported_at,
        tree=tree,
        messages=[_exported(m) for m in every],
        active_path=[m.message_id for m in conversation.messages],
        replying=conversation.pending is not None,
    )


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def export_markdown(conversation: Conversation, *, exported_at: datetime) -> str:
    """The active path as a Markdown document: the title, then each message under a heading
    naming who said it and when. A reply that failed or was stopped says so; a reply still
    being written is left out (with a note)."""
    lines = [
        f"# {_one_line(conversation.title) or 'Untitled'}",
        "",
        f"_Exported {_when(exported_at)}; started {_when(conversation.started_at)}._",
    ]
    for msg in conversation.messages:
        who = "You" if msg.role == "user" else "Assistant"
        lines += ["", f"## {who} · {_when(msg.at)}", ""]
        if msg.text:
            lines.append(msg.text.rstrip("\n"))
        if msg.status == "cancelled":
            lines += ["", "_(stopped)_"]
        elif msg.status == "failed":
            reason = _one_line(msg.error or "") or "no answer"
            lines += ["", f"_(failed: {reason})_"]
    if conversation.pending is not None:
        lines += ["", "_(an answer was being written when this was exported)_"]
    return "\n".join(lines) + "\n"
