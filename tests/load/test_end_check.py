"""The fault run's end check names each unanswered message and where it was seen."""

from __future__ import annotations

from pathlib import Path

from benchmarks.faults import log_lines, unanswered

from chatcore.events import Recorded, ReplyCompleted, Usage
from tests.support.factories import EPOCH, message, opening


def _log(sid: str) -> list[Recorded]:
    done = ReplyCompleted(
        at=EPOCH,
        conversation_id="c1",
        reply_id="r1",
        in_reply_to="m1",
        model="demo",
        usage=Usage(prompt_tokens=1, completion_tokens=1),
    )
    events = [*opening(sid), message(1), done, message(2)]
    return [Recorded(f"1-{n}", e) for n, e in enumerate(events)]


def test_every_unanswered_message_is_named_once_with_where_it_was_seen() -> None:
    logs = {"s1": _log("s1")}
    reports = [
        {"session_id": "s1", "acked": {"cm1": "m1", "cm2": "m2"}, "terminals": {"m1": 1}},
        {"session_id": "s2", "acked": {"cm9": "m9"}, "terminals": {}},
    ]
    found = unanswered(logs, reports)
    by_id = {f["message_id"]: f for f in found}
    assert sorted(by_id) == ["m2", "m9"]
    assert by_id["m2"]["seen"] == "log+client"
    assert by_id["m2"]["position"] == "1-4"
    assert by_id["m9"]["seen"] == "client"


def test_log_lines_pick_the_lines_naming_a_message(tmp_path: Path) -> None:
    (tmp_path / "worker1.log").write_text('{"message_id": "m2", "msg": "reply started"}\nother\n')
    (tmp_path / "api1.log").write_text('{"message_id": "m3"}\n')
    assert log_lines(tmp_path, ["m2"]) == ['worker1: {"message_id": "m2", "msg": "reply started"}']
