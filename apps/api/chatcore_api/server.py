"""Running the app under uvicorn with the protocol's settings, and a clean shutdown.

On SIGTERM/SIGINT uvicorn stops accepting connections; before it drops the open WebSockets
(which it would close with 1012), :class:`ChatServer` closes them itself with 1001 "going
away", so clients reconnect (to another process) and resume from their cursor. The app's
lifespan then lets the in-process worker finish its replies within the grace period.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from chatcore_api import loops
from chatcore_api.runtime import Runtime
from chatcore_api.settings import ApiSettings


def server_config(
    app: FastAPI, settings: ApiSettings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        lifespan="on",
        loop="uvloop" if loops.loop_name() == "uvloop" else "asyncio",
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        server_header=False,
        # Forwarded headers are read by the app (client_address.ForwardedClient), from the
        # trusted_proxies only; uvicorn's own default would believe any local client.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.worker.shutdown_grace) + 5,
        timeout_keep_alive=5,
    )


class ChatServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime: Runtime | None = getattr(self._app.state, "runtime", None)
        for server in self.servers:
            server.close()  # no new connections while the open ones are told to go
        if runtime is not None:
            await runtime.close_connections()
        await super().shutdown(sockets)

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with ``port=0``)."""
        for server in self.servers:
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        raise RuntimeError("the server is not listening")
