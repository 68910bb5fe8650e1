"""The app factory: ``create_app(settings) -> FastAPI``.

The app is thin: it translates between the protocol (frames, JSON bodies) and the core's use
cases, and everything it uses comes from the container (``app.state.container``), which the
lifespan turns into a running :class:`~chatcore_api.runtime.Runtime` (``app.state.runtime``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatcore.errors import (
    DomainError,
    InvalidIdentifier,
    PortError,
    SessionNotFound,
    UnknownConversation,
)
from chatcore_api.client_address import ForwardedClient, parse_networks
from chatcore_api.container import Container
from chatcore_api.errors import ApiError, RateLimited, Unauthorized
from chatcore_api.handler import WebSocketHandler
from chatcore_api.hosts import AllowedHosts, allowed_hosts
from chatcore_api.logout import router as logout_router
from chatcore_api.rest import get_runtime, router
from chatcore_api.runtime import Runtime
from chatcore_api.security import BodyLimit, SecurityHeaders, origin_allowed
from chatcore_api.settings import ApiSettings, load_settings
from chatcore_api.web import WebClient
from chatcore_api.worker_health import assess

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
READY_PROBE_SESSION = "readiness-probe-0000"


def _version() -> str:
    try:
        return version("chatcore")
    except PackageNotFoundError:
        return "0.0.0"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers: dict[str, str] = {}
        if exc.status == 401:
            headers["www-authenticate"] = "Bearer"
        if isinstance(exc, RateLimited):
            headers["retry-after"] = str(max(1, int(exc.retry_after + 0.999)))
        elif exc.status == 503:
            headers["retry-after"] = "1"
        return _error(exc.status, exc.code, exc.message, headers)

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        status = 422
        if isinstance(exc, SessionNotFound | UnknownConversation):
            status = 404
        elif isinstance(exc, InvalidIdentifier):
            status = 400
        return _error(status, exc.code, exc.message)

    async def port_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PortError)
        log.warning(
            "storage error on a request", extra={"path": request.url.path, "error": exc.code}
        )
        return _error(
            503, "unavailable", "storage is unavailable; retry shortly", {"retry-after": "1"}
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        body = {
            "error": {
                "code": "bad_request",
                "message": f"{where}: {first['msg']}" if where else str(first["msg"]),
                "details": jsonable_encoder(details),
            }
        }
        return JSONResponse(body, status_code=422)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            dict(exc.headers or {}),
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(PortError, port_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    storage: bool
    workers: int = Field(description="Live workers (their heartbeats are on time).")
    in_process_worker: bool


def create_app(
    settings: ApiSettings | None = None, *, container: Container | None = None
) -> FastAPI:
    settings = settings if settings is not None else load_settings()
    container = container if container is not None else Container(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(container, settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await runtime.stop()
            app.state.runtime = None

    app = FastAPI(
        title="chatcore",
        version=_version(),
        summary="Real-time AI chat: sessions over REST, conversations over the /ws protocol.",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.state.settings = settings
    app.state.container = container
    app.state.runtime = None

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    # (the last added runs first: hosts are checked before anything else, then the client's
    # address is settled for everything after)
    app.add_middleware(ForwardedClient, trusted=parse_networks(settings.trusted_proxies))
    app.add_middleware(AllowedHosts, hosts=allowed_hosts(settings.allowed_hosts, settings.host))
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(logout_router)

    @app.get("/healthz", tags=["operations"], response_model=Health)
    async def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready"}},
    )
    async def readyz(request: Request) -> Response:
        """Storage answers (every part of it: the log and each work queue shard) and at least
        one worker is alive (its heartbeat is fresh)."""
        runtime = get_runtime(request)
        storage = True
        try:
            await asyncio.wait_for(
                runtime.service.store.last_position(READY_PROBE_SESSION), timeout=2.0
            )
            for probe in runtime.core.probes:  # every queue shard, for one
                await asyncio.wait_for(probe(), timeout=2.0)
        except (PortError, TimeoutError):
            storage = False
        workers = 0
        try:
            found = await asyncio.wait_for(runtime.heartbeats.workers(), timeout=2.0)
            # Only workers beating on time count (the same rule as `chatcore worker --check`).
            stale_after = 2 * settings.worker.heartbeat_interval
            health = assess(found, now=datetime.now(UTC), stale_after=stale_after)
            workers = sum(1 for h in health if h.live)
        except (PortError, TimeoutError):
            storage = False
        ready = storage and workers > 0
        body = Readiness(
            status="ready" if ready else "not_ready",
            storage=storage,
            workers=workers,
            in_process_worker=runtime.worker is not None,
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    if settings.metrics_enabled:
        metrics_token = settings.metrics_token

        @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
        async def metrics(request: Request) -> Response:
            """Prometheus metrics of this process (``Authorization: Bearer <metrics_token>``
            when the server has one)."""
            if metrics_token is not None:
                given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                expected = metrics_token.get_secret_value()
                if not hmac.compare_digest(given.encode(), expected.encode()):
                    raise Unauthorized("send the metrics token as 'Authorization: Bearer <token>'")
            runtime = get_runtime(request)
            registry = runtime.metrics.registry
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        runtime: Runtime | None = ws.app.state.runtime
        if runtime is None or not origin_allowed(
            ws.headers.get("origin"), ws.headers.get("host"), settings.allowed_origins
        ):
            if runtime is not None:
                runtime.metrics.closes.labels("403").inc()
            log.info(
                "websocket refused: origin not allowed", extra={"origin": ws.headers.get("origin")}
            )
            await ws.close(code=1008)  # before accept: the handshake is answered with 403
            return
        await WebSocketHandler(
            ws,
            sessions=runtime.sessions,
            connections=runtime.connections,
            service=runtime.service,
            limits=runtime.limits,
            caps=runtime.caps,
            client=runtime.client_keys.key(ws.client.host if ws.client else None),
            metrics=runtime.metrics,
            settings=runtime.connection_settings,
            model_name=runtime.model_name,
        ).run()

    web = WebClient(settings.web_dir)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(path: str) -> Response:
        if path in {"api", "ws"} or path.startswith("api/"):
            return _error(404, "not_found", "no such endpoint")
        return web.response(path)

    return app
