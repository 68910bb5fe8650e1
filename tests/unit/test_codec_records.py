"""Bulk decoding of stored events gives exactly what decoding them one by one gives."""

from __future__ import annotations

import orjson
import pytest

from chatcore.errors import CorruptRecord
from chatcore.events import ReplyCompleted, Usage
from chatcore_adapters.codec import decode_recorded, decode_records, encode_event
from tests.contract.event_store_contract import every_event_type
from tests.support.factories import EPOCH


def test_bulk_decoding_matches_one_by_one() -> None:
    stored = [(f"7-{n}", encode_event(e)) for n, e in enumerate(every_event_type())]
    assert decode_records(stored) == [decode_recorded(p, raw) for p, raw in stored]
    assert [r.event for r in decode_records(stored)] == every_event_type()
    assert decode_records([]) == []


def test_old_schema_versions_are_upcast_in_bulk() -> None:
    v1 = orjson.dumps(
        {
            "type": "reply_completed",
            "at": EPOCH.isoformat(),
            "conversation_id": "c1",
            "reply_id": "r1",
            "tokens": 7,
            "v": 1,
        }
    )
    (record,) = decode_records([("1-0", v1)])
    assert record.event == ReplyCompleted(
        at=EPOCH,
        conversation_id="c1",
        reply_id="r1",
        in_reply_to="",
        model="unknown",
        usage=Usage(prompt_tokens=0, completion_tokens=7),
    )
    assert decode_records([("1-0", v1)]) == [decode_recorded("1-0", v1)]


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[1]",
        b'{"at": "2026-01-01T00:00:00Z"}',
        b'{"type": "no_such_event", "at": "2026-01-01T00:00:00Z"}',
        b'{"type": "reply_delta", "at": "2026-01-01T00:00:00Z", "v": 9}',
        b'{"type": "reply_delta", "at": "yesterday", "conversation_id": "c",'
        b' "reply_id": "r", "text": "t"}',
    ],
)
def test_an_unreadable_record_names_its_position(bad: bytes) -> None:
    good = encode_event(every_event_type()[0])
    with pytest.raises(CorruptRecord, match="5-5"):
        decode_records([("5-4", good), ("5-5", bad), ("5-6", good)])
