"""The cached view's bytes: what the codec writes, and what it reads back or discards.

pydantic writes and reads them (no orjson, so the base install has the in-memory cache); the
bytes are those the orjson-based codec wrote before, so caches written then read the same.
"""

from __future__ import annotations

import json
import logging

import orjson
import pytest

from chatcore.events import Recorded, ReplyStarted
from chatcore.view import SessionView, fold
from chatcore_adapters.codec import decode_view, encode_view
from tests.support.factories import EPOCH, delta, message, opening

SID = "S" * 22


def answered_view() -> SessionView:
    events = [
        *opening(SID),
        message(1),
        ReplyStarted(at=EPOCH, conversation_id="c1", reply_id="r1", in_reply_to="m1", model="demo"),
        delta(1),
        delta(2),
    ]
    view = fold(Recorded(f"1-{n}", event) for n, event in enumerate(events))
    assert view.conversations["c1"].messages, "the fold should hold the message"
    return view


def test_a_view_is_written_as_the_earlier_orjson_codec_wrote_it_and_read_back() -> None:
    view = answered_view()
    earlier = orjson.dumps(
        {"snapshot": SessionView.SNAPSHOT_VERSION, "view": view.model_dump(mode="json")}
    )

    assert encode_view(view) == earlier
    assert decode_view(earlier) == view
    assert decode_view(earlier.decode()) == view


def test_an_envelope_written_differently_is_read_by_the_careful_path() -> None:
    view = answered_view()
    spaced = json.dumps(
        {"view": view.model_dump(mode="json"), "snapshot": SessionView.SNAPSHOT_VERSION},
        indent=2,
    )

    assert decode_view(spaced) == view


def test_a_view_of_another_snapshot_version_reads_as_no_cache_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = answered_view()
    older = orjson.dumps(
        {"snapshot": SessionView.SNAPSHOT_VERSION - 1, "view": view.model_dump(mode="json")}
    )

    with caplog.at_level(logging.WARNING):
        assert decode_view(older) is None
    assert caplog.records == []


@pytest.mark.parametrize(
    "damaged",
    [
        b"",
        b"not json",
        b'{"snapshot":%d,"view":{"conversations": 7}}' % SessionView.SNAPSHOT_VERSION,
        b'{"snapshot":%d}' % SessionView.SNAPSHOT_VERSION,
        b'{"snapshot":%d,"view":' % SessionView.SNAPSHOT_VERSION + b"[" * 100_000 + b"}",
    ],
)
def test_a_damaged_entry_reads_as_no_cache_with_a_warning(
    damaged: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert decode_view(damaged) is None
    assert [r.message for r in caplog.records] == ["discarding an unreadable cached view"]
