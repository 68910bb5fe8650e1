"""Errors of the API layer (authentication, limits), each with the machine ``code`` that
reaches the client in an ``error`` frame or a JSON error body."""

from __future__ import annotations


class ApiError(Exception):
    code: str = "error"
    status: int = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unauthorized(ApiError):
    """The token is missing, malformed or not signed by this deployment."""

    code = "unauthorized"
    status = 401


# Why a genuine token is refused after its session was logged out everywhere (tokens_revoked).
LOGGED_OUT = "this session was logged out everywhere; this token is no longer valid"


class TokenExpired(Unauthorized):
    """The token was genuine but is too old: the session must be started again."""

    code = "token_expired"


class Forbidden(ApiError):
    """A genuine token, for another session than the one asked for."""

    code = "forbidden"
    status = 403


class RateLimited(ApiError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ApiError):
    code = "unavailable"
    status = 503
