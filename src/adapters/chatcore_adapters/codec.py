"""How events and cached views become bytes, and back (the domain does not serialise itself).

A stored event is the JSON object of its fields plus ``"v"``, the schema version it was
written with; reading runs the core's upcasters before validation. A cached view is wrapped
with the snapshot version of :class:`SessionView`; an entry of another version, or one that no
longer parses, reads as "no cache" and the view is rebuilt from the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from chatcore.errors import CorruptRecord
from chatcore.events import EVENT_ADAPTER, EVENT_TYPES, AnyEvent, Event, Recorded, upcast
from chatcore.view import SessionView

log = logging.getLogger(__name__)

_RECORDS: TypeAdapter[list[Recorded]] = TypeAdapter(list[Recorded])
_UNREADABLE = (orjson.JSONDecodeError, ValidationError, ValueError, TypeError)


def encode_event(event: Event) -> bytes:
    data = event.model_dump(mode="json")
    data["v"] = type(event).schema_version
    return orjson.dumps(data)


def _current_fields(raw: bytes | str) -> dict[str, Any]:
    """A stored event's fields, upcast to the current schema of its type (not validated)."""
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict):
        raise CorruptRecord("a stored event is not a JSON object")
    version = int(data.pop("v", 1))
    type_tag = data.get("type")
    if not isinstance(type_tag, str):
        raise CorruptRecord("a stored event has no type")
    cls = EVENT_TYPES.get(type_tag)
    if cls is None or cls.schema_version != version:
        return upcast(type_tag, version, data)  # ValueError when it cannot be done
    fields: dict[str, Any] = data
    return fields


def decode_event(raw: bytes | str) -> AnyEvent:
    try:
        return EVENT_ADAPTER.validate_python(_current_fields(raw))
    except _UNREADABLE as exc:
        raise CorruptRecord(f"unreadable stored event: {exc}") from exc


def decode_recorded(position: str, raw: bytes | str) -> Recorded:
    return Recorded.model_construct(position=position, event=decode_event(raw))


def decode_records(entries: Iterable[tuple[str, bytes | str]]) -> list[Recorded]:
    """Decode many ``(position, stored event)`` pairs at once: the same result as
    :func:`decode_recorded` on each, in one validation pass (reading a long log is dominated
    by this, so it is done in bulk)."""
    pairs = list(entries)
    try:
        fields = [{"position": position, "event": _current_fields(raw)} for position, raw in pairs]
        return _RECORDS.validate_python(fields)
    except (*_UNREADABLE, CorruptRecord):
        # Name the culprit: decode one by one until the bad record raises.
        for position, raw in pairs:
            try:
                decode_event(raw)
            except CorruptRecord as exc:
                raise CorruptRecord(f"event at {position}: {exc.message}") from exc
        raise


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
