"""Client frames as the server reads them: validation against protocol v1, and the documented
error code of a refused command."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError

from chatcore.errors import DomainError
from chatcore.protocol import CLIENT_FRAME, ClientFrame, ErrorCode

log = logging.getLogger(__name__)


class FrameError(Exception):
    """A client frame that cannot be understood (``bad_frame``).

    ``hello_protocol`` is the ``protocol`` a refused ``hello`` named, so that a newer
    client's hello, whose other fields this server may not know, is still told
    ``unsupported_protocol`` rather than ``bad_frame``.
    """

    def __init__(
        self, reason: str, request_id: str | None = None, *, hello_protocol: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id
        self.hello_protocol = hello_protocol


def _request_id_of(data: object) -> str | None:
    if isinstance(data, dict):
        value = data.get("request_id")
        if isinstance(value, str) and 0 < len(value) <= 80:
            return value
    return None


def parse_client_frame(text: str) -> ClientFrame:
    """Validate one text frame against protocol v1, or raise :class:`FrameError`."""
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise FrameError("a frame must be a JSON object with a 'type'")
    request_id = _request_id_of(data)
    if not isinstance(data.get("type"), str):
        raise FrameError("a frame must have a string 'type'", request_id)
    protocol = data.get("protocol") if data["type"] == "hello" else None
    hello_protocol = protocol if type(protocol) is int else None
    try:
        return CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"][1:])  # skip the union tag
        reason = f"{where}: {first['msg']}" if where else first["msg"]
        extra = exc.error_count() - 1
        if extra:
            reason += f" (and {extra} more)"
        raise FrameError(reason[:300], request_id, hello_protocol=hello_protocol) from None


_WIRE_CODES = frozenset(code.value for code in ErrorCode)


def wire_code(exc: DomainError) -> ErrorCode:
    """The documented code of a refused command. A domain error the protocol does not list
    would be a server bug (e.g. a worker's error reaching a client): it goes out as
    ``internal_error`` rather than as a code no client was told about."""
    if exc.code in _WIRE_CODES:
        return ErrorCode(exc.code)
    log.error("an undocumented domain error reached a client", extra={"error": exc.code})
    return ErrorCode.INTERNAL_ERROR
