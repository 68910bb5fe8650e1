"""The archive format of ``chatcore export`` / ``chatcore import`` (``chatcore_adapters.archive``):
every malformed input is refused with an error naming its line, and nothing of the archive is
written (into the in-memory store, whose every session is checked afterwards)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatcore.events import Event
from chatcore_adapters.archive import (
    ArchiveInvalid,
    ArchiveReader,
    import_archive,
    log_import,
)
from chatcore_adapters.bootstrap import bootstrap
from chatcore_adapters.codec import encode_event
from chatcore_adapters.memory import MemoryEventStore
from tests.support.factories import message, opening, session_id
from tests.support.scripted_llm import ScriptedLLM

Line = dict[str, Any]


def _session(sid: str, events: list[Event] | None = None, start: int = 1_700_000_000_000) -> Line:
    events = events if events is not None else [*opening(sid), message(1)]
    return {
        "session_id": sid,
        "records": [[f"{start + n}-0", encode_event(e).decode()] for n, e in enumerate(events)],
    }


def _archive(sessions: list[Line]) -> list[Line]:
    header = {
        "format": "chatcore.sessions",
        "version": 1,
        "exported_at": "2026-01-01T00:00:00Z",
        "source": "sqlite",
        "key_ids": [],
    }
    events = sum(len(s["records"]) for s in sessions)
    return [header, *sessions, {"end": {"sessions": len(sessions), "events": events}}]


def _write(path: Path, lines: Sequence[Line | str]) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


async def _import(path: Path) -> tuple[Exception | None, list[str]]:
    """Import ``path`` into a new in-memory chatcore: the error, and the sessions written."""
    chat = bootstrap(llm=ScriptedLLM())
    error: Exception | None = None
    try:
        await import_archive(path, log_import(chat), clock=chat.clock, retention=None)
    except ArchiveInvalid as exc:
        error = exc
    assert isinstance(chat.store, MemoryEventStore)
    return error, chat.store.session_ids()


async def test_a_valid_archive_imports(tmp_path: Path) -> None:
    sids = [session_id(), session_id()]
    path = _write(tmp_path / "a.jsonl", _archive([_session(sid) for sid in sids]))
    error, written = await _import(path)
    assert error is None
    assert sorted(written) == sorted(sids)


def _bad_second_session(change: Callable[[Line], None]) -> Callable[[list[Line]], None]:
    def edit(lines: list[Line]) -> None:
        change(lines[2])

    return edit


def _swap_positions(line: Line) -> None:
    line["records"][1][0], line["records"][2][0] = line["records"][2][0], line["records"][1][0]


def _repeat_position(line: Line) -> None:
    line["records"][2][0] = line["records"][1][0]


def _unreadable_event(line: Line) -> None:
    line["records"][2][1] = '{"v":1,"type":"no_such_event"}'


def _not_json_event(line: Line) -> None:
    line["records"][2][1] = "{half"


def _another_sessions_log(line: Line) -> None:
    line["records"] = _session(session_id())["records"]


def _bad_session_id(line: Line) -> None:
    line["session_id"] = "a:b{c}"


def _bad_position(line: Line) -> None:
    line["records"][0][0] = "12-x"


def _zero_position(line: Line) -> None:
    line["records"][0][0] = "0-0"


def _no_records(line: Line) -> None:
    line["records"] = []


def _extra_field(line: Line) -> None:
    line["owner"] = "me"


CASES: list[tuple[str, Callable[[list[Line]], None], str]] = [
    ("positions not increasing", _bad_second_session(_swap_positions), "does not come after"),
    ("a position twice", _bad_second_session(_repeat_position), "does not come after"),
    ("a bad session id", _bad_second_session(_bad_session_id), "is not a session id"),
    ("a bad position", _bad_second_session(_bad_position), "'12-x' is not a position"),
    ("position 0-0", _bad_second_session(_zero_position), "does not come after 0-0"),
    ("an unknown event", _bad_second_session(_unreadable_event), "unreadable stored event"),
    ("an event that is not JSON", _bad_second_session(_not_json_event), "unreadable"),
    ("a log of another session", _bad_second_session(_another_sessions_log), "does not open"),
    ("a session without events", _bad_second_session(_no_records), "not a session line"),
    ("an unknown field", _bad_second_session(_extra_field), "not a session line"),
]


@pytest.mark.parametrize(("what", "edit", "says"), CASES, ids=[c[0] for c in CASES])
async def test_a_bad_session_line_is_refused_naming_its_line_and_nothing_is_written(
    tmp_path: Path, what: str, edit: Callable[[list[Line]], None], says: str
) -> None:
    lines = _archive([_session(session_id()), _session(session_id()), _session(session_id())])
    edit(lines)
    error, written = await _import(_write(tmp_path / "a.jsonl", lines))
    assert isinstance(error, ArchiveInvalid)
    assert [p.line for p in error.problems] == [3]
    assert "line 3: " in error.message and says in error.message
    assert written == []  # not even the sessions before and after the bad line


async def test_several_bad_lines_are_all_named(tmp_path: Path) -> None:
    lines = _archive([_session(session_id()) for _ in range(4)])
    _bad_session_id(lines[1])
    _swap_positions(lines[3])
    error, written = await _import(_write(tmp_path / "a.jsonl", lines))
    assert isinstance(error, ArchiveInvalid)
    assert [p.line for p in error.problems] == [2, 4]
    assert written == []


async def test_a_session_twice_is_refused(tmp_path: Path) -> None:
    sid = session_id()
    error, written = await _import(
        _write(tmp_path / "a.jsonl", _archive([_session(sid), _session(sid)]))
    )
    assert isinstance(error, ArchiveInvalid) and "line 3: session" in error.message
    assert "twice" in error.message and written == []


def _lines_with(edit: Callable[[list[Line | str]], None]) -> list[Line | str]:
    lines: list[Line | str] = list(_archive([_session(session_id()), _session(session_id())]))
    edit(lines)
    return lines


def _replace(index: int, value: Line | str) -> Callable[[list[Line | str]], None]:
    def edit(lines: list[Line | str]) -> None:
        lines[index] = value

    return edit


def _drop(lines: list[Line | str], index: int) -> None:
    del lines[index]


FILE_CASES: list[tuple[str, Callable[[list[Line | str]], None], str]] = [
    ("bad JSON", _replace(2, '{"session_id": "x", "records": [['), "line 3: not JSON"),
    ("an empty line", _replace(2, ""), "line 3: an empty line"),
    ("no header", _replace(0, {"hello": 1}), "line 1: not a chatcore session archive"),
    (
        "a newer format version",
        _replace(
            0, {"format": "chatcore.sessions", "version": 2, "exported_at": "x", "source": "x"}
        ),
        "line 1: archive format version 2 is not one this chatcore reads (1)",
    ),
    (
        "a bad header",
        _replace(0, {"format": "chatcore.sessions", "version": 1, "source": "sqlite"}),
        "line 1: a bad header: exported_at",
    ),
    ("no end line", lambda lines: _drop(lines, -1), "ends without its end line"),
    (
        "an end line that counts otherwise",
        lambda lines: _drop(lines, 1),
        "line 3: the end line counts 2 sessions",
    ),
    (
        "a line after the end",
        lambda lines: lines.append(lines[1]),
        "line 5: a line after the end line (line 4)",
    ),
    ("a bad end line", _replace(3, {"end": {"sessions": -1}}), "line 4: a bad end line"),
]


@pytest.mark.parametrize(("what", "edit", "says"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
async def test_a_bad_archive_is_refused_and_nothing_is_written(
    tmp_path: Path, what: str, edit: Callable[[list[Line | str]], None], says: str
) -> None:
    error, written = await _import(_write(tmp_path / "a.jsonl", _lines_with(edit)))
    assert isinstance(error, ArchiveInvalid), what
    assert says in error.message
    assert written == []


async def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    error, _ = await _import(empty)
    assert isinstance(error, ArchiveInvalid) and "is empty" in error.message
    error, _ = await _import(tmp_path / "missing.jsonl")
    assert isinstance(error, ArchiveInvalid) and "cannot read" in error.message


def test_the_header_is_read_alone(tmp_path: Path) -> None:
    lines = _archive([_session(session_id())])
    lines[0]["key_ids"] = ["AbCdEf12"]
    header = ArchiveReader(_write(tmp_path / "a.jsonl", lines)).header()
    assert (header.source, header.key_ids) == ("sqlite", ["AbCdEf12"])
