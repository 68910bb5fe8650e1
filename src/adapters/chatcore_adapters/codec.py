"""How events and cached views become bytes, and back (the domain does not serialise itself).

A stored event is the JSON object of its fields plus ``"v"``, the schema version it was
written with; reading runs the core's upcasters before validation. A cached view is wrapped
with the snapshot version of :class:`SessionView`; an entry of another version, or one that no
longer parses, reads as "no cache" and the view is rebuilt from the log.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError

from chatcore.errors import CorruptRecord
from chatcore.events import EVENT_ADAPTER, AnyEvent, Event, Recorded, upcast
from chatcore.view import SessionView

log = logging.getLogger(__name__)


_PREFIX = b'{"v":'


def encode_event(event: Event) -> bytes:
    """``{"v":<schema version>,<the event's fields>}``: the version leads, so reading can
    strip it without parsing the JSON twice."""
    body = event.model_dump_json().encode()
    return b'{"v":%d,%s' % (type(event).schema_version, body[1:])


def decode_event(raw: bytes | str) -> AnyEvent:
    data = raw.encode() if isinstance(raw, str) else raw
    if data.startswith(_PREFIX):
        comma = data.find(b",", len(_PREFIX))
        version_text = data[len(_PREFIX) : comma]
        if comma > 0 and version_text.isdigit():
            try:
                event = EVENT_ADAPTER.validate_json(b"{" + data[comma + 1 :])
            except ValidationError:
                pass  # an older schema: take the upcasting path below
            else:
                if type(event).schema_version == int(version_text):
                    return event
    return _decode_upcasting(data)


def _decode_upcasting(data: bytes) -> AnyEvent:
    try:
        payload: Any = orjson.loads(data)
        if not isinstance(payload, dict):
            raise CorruptRecord("a stored event is not a JSON object")
        version = int(payload.pop("v", 1))
        type_tag = payload.get("type")
        if not isinstance(type_tag, str):
            raise CorruptRecord("a stored event has no type")
        return EVENT_ADAPTER.validate_python(upcast(type_tag, version, payload))
    except (orjson.JSONDecodeError, ValidationError, ValueError, TypeError) as exc:
        raise CorruptRecord(f"unreadable stored event: {exc}") from exc


def decode_recorded(position: str, raw: bytes | str) -> Recorded:
    return Recorded(position, decode_event(raw))


def encode_view(view: SessionView) -> bytes:
    return orjson.dumps(
        {"snapshot": SessionView.SNAPSHOT_VERSION, "view": view.model_dump(mode="json")}
    )


def decode_view(raw: bytes | str) -> SessionView | None:
    try:
        data: Any = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("snapshot") != SessionView.SNAPSHOT_VERSION:
            return None
        return SessionView.model_validate(data["view"])
    except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError) as exc:
        log.warning("discarding an unreadable cached view", extra={"error": str(exc)[:200]})
        return None
