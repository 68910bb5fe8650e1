"""The bundled API of chatcore: the FastAPI app, its composition root, the ``/ws`` protocol
server and the ``chatcore`` command. Build an app with :func:`chatcore_api.app.create_app`.

It needs the ``server`` extra (``pip install 'chatcore[server]'``); in an install without it,
importing this package (or running ``chatcore``) raises an ImportError that says so, rather
than failing later on whichever module happens to be missing first.
"""

from importlib.util import find_spec

# The import names of what the server extra installs (uvloop is optional: not on Windows).
_SERVER_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "websockets",
    "pydantic_settings",
    "dependency_injector",
    "prometheus_client",
    "orjson",
)

_missing = [name for name in _SERVER_MODULES if find_spec(name) is None]
if _missing:
    raise ImportError(
        "chatcore_api and the chatcore command need the server extra: "
        f"pip install 'chatcore[server]' (missing: {', '.join(_missing)})"
    )
