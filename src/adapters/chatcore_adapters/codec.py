"""How events and cached views become bytes, and back (the domain does not serialise itself).

A stored event is the JSON object of its fields plus ``"v"``, the schema version it was
written with; reading runs the core's upcasters before validation. A cached view is wrapped
with the snapshot version of :class:`SessionView`; an entry of another version, or one that no
longer parses, reads as "no cache" and the view is rebuilt from the log.

pydantic (its Rust core) writes and reads the JSON of events and views directly, without a
dict in between: as fast as orjson for writing a view and faster for reading one
(``python -m benchmarks.view_codec``). The standard ``json`` module
parses only what needs a closer look (an event of an older schema, a damaged entry). So the
codec, and with it the in-memory adapters, needs nothing that the base install lacks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from chatcore.errors import CorruptRecord
from chatcore.events import EVENT_ADAPTER, AnyEvent, Event, Recorded, upcast
from chatcore.view import SessionView

log = logging.getLogger(__name__)

_EVENTS: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[AnyEvent])
_VIEW: TypeAdapter[SessionView] = TypeAdapter(SessionView)
_PREFIX = b'{"v":'
_VIEW_PREFIX = b'{"snapshot":%d,"view":' % SessionView.SNAPSHOT_VERSION
# What reading a JSON document may raise on bad input (json's errors are ValueErrors).
_UNREADABLE = (ValidationError, ValueError, TypeError, RecursionError)


def encode_event(event: Event) -> bytes:
    """``{"v":<schema version>,<the event's fields>}``: the version leads, so reading can
    strip it without parsing the JSON twice."""
    body = event.model_dump_json().encode()
    return b'{"v":%d,%s' % (type(event).schema_version, body[1:])


def _split(raw: bytes | str) -> tuple[int, bytes] | None:
    """``(version, the event's JSON without "v")`` for a record written by :func:`encode_event`;
    ``None`` for anything else (older writers, corrupt data)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if not data.startswith(_PREFIX):
        return None
    comma = data.find(b",", len(_PREFIX))
    version_text = data[len(_PREFIX) : comma]
    if comma < 0 or not version_text.isdigit():
        return None
    return int(version_text), b"{" + data[comma + 1 :]


def decode_event(raw: bytes | str) -> AnyEvent:
    split = _split(raw)
    if split is not None:
        version, body = split
        try:
            event = EVENT_ADAPTER.validate_json(body)
        except ValidationError:
            pass  # an older schema, or damage: the careful path below says which
        else:
            if type(event).schema_version == version:
                return event
    return _decode_upcasting(raw)


def _decode_upcasting(raw: bytes | str) -> AnyEvent:
    try:
        payload: Any = json.loads(raw)
        if not isinstance(payload, dict):
            raise CorruptRecord("a stored event is not a JSON object")
        version = int(payload.pop("v", 1))
        type_tag = payload.get("type")
        if not isinstance(type_tag, str):
            raise CorruptRecord("a stored event has no type")
        return EVENT_ADAPTER.validate_python(upcast(type_tag, version, payload))
    except _UNREADABLE as exc:
        raise CorruptRecord(f"unreadable stored event: {exc}") from exc


def decode_recorded(position: str, raw: bytes | str) -> Recorded:
    return Recorded(position, decode_event(raw))


def decode_records(entries: Iterable[tuple[str, bytes | str]]) -> list[Recorded]:
    """Decode many ``(position, stored event)`` pairs: the same result as
    :func:`decode_recorded` on each, but current-schema records are validated in one
    pydantic-core call over a JSON array (reading a long log is dominated by decoding)."""
    pairs = list(entries)
    splits = [_split(raw) for _, raw in pairs]
    if all(s is not None for s in splits):
        bodies = [s[1] for s in splits if s is not None]
        try:
            events = _EVENTS.validate_json(b"[" + b",".join(bodies) + b"]")
        except ValidationError:
            pass  # some record needs upcasting or is damaged: decode one by one
        else:
            out: list[Recorded] = []
            for (position, raw), split, event in zip(pairs, splits, events, strict=True):
                assert split is not None
                if type(event).schema_version != split[0]:
                    event = _decode_upcasting(raw)
                out.append(Recorded(position, event))
            return out
    records = []
    for position, raw in pairs:
        try:
            records.append(Recorded(position, decode_event(raw)))
        except CorruptRecord as exc:
            raise CorruptRecord(f"event at {position}: {exc.message}") from exc
    return records


def encode_view(view: SessionView) -> bytes:
    """``{"snapshot":<SessionView.SNAPSHOT_VERSION>,"view":<the view's fields>}``."""
    return _VIEW_PREFIX + _VIEW.dump_json(view) + b"}"


def decode_view(raw: bytes | str) -> SessionView | None:
    data = raw.encode() if isinstance(raw, str) else raw
    if data.startswith(_VIEW_PREFIX) and data.endswith(b"}"):
        try:
            return _VIEW.validate_json(data[len(_VIEW_PREFIX) : -1])
        except ValidationError:
            pass  # not what encode_view wrote after all: the careful path below decides
    try:
        envelope: Any = json.loads(data)
        if (
            not isinstance(envelope, dict)
            or envelope.get("snapshot") != SessionView.SNAPSHOT_VERSION
        ):
            return None
        return SessionView.model_validate(envelope["view"])
    except (*_UNREADABLE, KeyError) as exc:
        log.warning("discarding an unreadable cached view", extra={"error": str(exc)[:200]})
        return None
