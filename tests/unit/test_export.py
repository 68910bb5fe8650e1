"""Exporting a conversation as Markdown and JSON: the active path, or the whole tree."""

from __future__ import annotations

from datetime import timedelta

import orjson

from chatcore import decisions
from chatcore.events import Event, Recorded, Usage
from chatcore.export import ExportedConversation, export_json, export_markdown
from chatcore.view import Conversation, SessionView, apply
from tests.support.factories import EPOCH

SID = "S" * 22


class Story:
    """A conversation built through the decisions: asked, answered, edited, answered again."""

    def __init__(self) -> None:
        self.view = SessionView()
        self.n = 0
        self.record(decisions.open_session(SID, "c1", EPOCH, title="Trip"))

    def record(self, events: list[Event]) -> None:
        for event in events:
            self.n += 1
            apply(self.view, Recorded(f"{self.n}-0", event))

    def ask(self, text: str, mid: str) -> None:
        out = decisions.submit_message(
            self.view, EPOCH, conversation_id="c1", client_message_id=mid, message_id=mid, text=text
        )
        assert isinstance(out, list)
        self.record(out)

    def reply(self, mid: str, text: str, rid: str) -> None:
        at, v = EPOCH + timedelta(minutes=1), self.view
        self.record(decisions.start_reply(v, at, message_id=mid, reply_id=rid, model="m"))
        self.record(decisions.append_text(v, at, message_id=mid, reply_id=rid, text=text))
        later = at
        usage = Usage(prompt_tokens=1, completion_tokens=1)
        self.record(
            decisions.complete_reply(self.view, later, message_id=mid, reply_id=rid, usage=usage)
        )

    @property
    def conv(self) -> Conversation:
        return self.view.conversations["c1"]


def story() -> Story:
    s = Story()
    s.ask("Where to go?", "m1")
    s.reply("m1", "Lisbon.\n\n* trams\n* tiles", "r1")
    out = decisions.edit_message(
        s.view,
        EPOCH,
        conversation_id="c1",
        edit_of="m1",
        client_message_id="m2",
        message_id="m2",
        text="Where to go in May?",
    )
    assert isinstance(out, list)
    s.record(out)
    s.record(decisions.request_cancel(s.view, EPOCH, conversation_id="c1"))
    return s


def test_markdown_holds_the_active_path_only() -> None:
    s = story()
    text = export_markdown(s.conv, exported_at=EPOCH + timedelta(days=1))
    assert text.startswith("# Where to go?\n")  # (the first message titled the chat)
    assert "## You · 2026-01-01 00:00 UTC\n\nWhere to go in May?\n" in text
    assert "_(stopped)_" in text
    assert "Lisbon" not in text and "Where to go?\n\n" not in text.split("\n", 1)[1]
    assert "_Exported 2026-01-02 00:00 UTC; started 2026-01-01 00:00 UTC._" in text


def test_markdown_keeps_an_answer_s_own_markdown_and_says_when_one_failed() -> None:
    s = Story()
    s.ask("Hi", "m1")
    s.reply("m1", "**Hello** there\n\n```py\nprint(1)\n```\n", "r1")
    s.ask("Again", "m2")
    s.record(
        decisions.fail_reply(
            s.view, EPOCH, message_id="m2", reply_id=None, code="llm_timeout", reason="Too\nslow."
        )
    )
    s.ask("Once more", "m3")
    text = export_markdown(s.conv, exported_at=EPOCH)
    answer = "## Assistant · 2026-01-01 00:01 UTC\n\n**Hello** there\n\n```py\nprint(1)\n```\n"
    assert answer in text
    assert "_(failed: Too slow.)_" in text
    assert text.endswith("Once more\n\n_(an answer was being written when this was exported)_\n")


def test_json_of_the_active_path_and_of_the_whole_tree() -> None:
    s = story()
    path = export_json(s.conv, exported_at=EPOCH)
    assert [m.message_id for m in path.messages] == ["m2", "m2.reply"]
    assert path.active_path == ["m2", "m2.reply"] and path.tree is False
    tree = export_json(s.conv, exported_at=EPOCH, tree=True)
    assert [(m.message_id, m.parent_id) for m in tree.messages] == [
        ("m1", None),
        ("r1", "m1"),
        ("m2", None),
        ("m2.reply", "m2"),
    ]
    assert tree.active_path == path.active_path
    assert tree.messages[1].usage == Usage(prompt_tokens=1, completion_tokens=1)
    # It is a JSON document that reads back as what was written.
    raw = tree.model_dump_json()
    data = orjson.loads(raw)
    assert (data["format"], data["version"]) == ("chatcore.conversation", 1)
    assert data["title"] == "Where to go?"
    assert ExportedConversation.model_validate_json(raw) == tree
