"""The shared fold fixture (``apps/web/tests/fixtures/folds.json``): current, complete, and
made of sessions the core would really record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from chatcore.events import EVENT_TYPES, event_type
from tests.support.fold_fixtures import FIXTURE, cases, fixture, main, render

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "server"


def validator(name: str) -> Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def test_the_committed_fixture_is_up_to_date() -> None:
    assert FIXTURE.read_text(encoding="utf-8") == render(fixture()), (
        "run: python -m tests.support.fold_fixtures"
    )


def test_the_fixture_covers_every_event_type() -> None:
    seen = {event_type(r.event) for case in cases() for r in case.records}
    assert seen == set(EVENT_TYPES)


def test_every_case_is_a_session_the_core_records_without_anomaly() -> None:
    for case in cases():
        assert case.view.anomalies == 0, case.name
        assert case.checkpoints[-1].after == len(case.records), case.name


def test_every_frame_is_a_frame_of_the_published_schemas_and_events_are_in_order() -> None:
    events, snapshots = validator("event.json"), validator("snapshot.json")
    for case in fixture()["cases"]:
        for frame in case["frames"]:
            events.validate(frame)
        for checkpoint in case["checkpoints"]:
            snapshots.validate(checkpoint["snapshot"])
        positions = [tuple(map(int, f["cursor"].split("-"))) for f in case["frames"]]
        assert positions == sorted(set(positions)), case["name"]


def test_the_profile_case_shows_the_partial_update_semantics() -> None:
    (case,) = [c for c in cases() if c.name.startswith("profile updates")]
    profiles = [
        (c.history["profile"]["displayName"], c.history["profile"]["language"])
        for c in case.checkpoints
    ]
    assert profiles == [
        ("Ada", None),  # only the name given
        ("Ada", "French"),  # only the language given: the name is kept
        (None, "French"),  # the name cleared with null: the language is kept
        ("Grace Hopper", "Portuguese"),  # both given, spaces collapsed
    ]


def test_the_check_fails_on_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "folds.json"
    assert main(["--out", str(out)]) == 0
    assert main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace('"Ada"', '"Bob"', 1))
    assert main(["--check", "--out", str(out)]) == 1
    assert main(["--check", "--out", str(tmp_path / "none.json")]) == 1
    assert "python -m tests.support.fold_fixtures" in capsys.readouterr().err
