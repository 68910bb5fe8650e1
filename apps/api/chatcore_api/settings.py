"""Settings of the bundled API: environment (``CHATCORE_*``), an optional config file, flags.

Precedence, strongest first: values passed in code (the CLI's flags), environment variables
(prefix ``CHATCORE_``, nested with ``__``: ``CHATCORE_WORKER__CONCURRENCY=4``), the config file
(TOML or JSON, named by ``--config`` or ``CHATCORE_CONFIG``), then the defaults below.

Validation is strict: an unknown key or a malformed value stops the process at start-up with a
message naming the setting (:class:`SettingsError`). Secrets are ``SecretStr`` (hidden in
``repr`` and logs), and the signing key is read from the environment only, never from a file.
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as SourceError

from chatcore_adapters.settings import ChatcoreSettings, Storage
from chatcore_api import loops
from chatcore_api.client_address import parse_networks
from chatcore_api.limit_settings import LimitSettings
from chatcore_api.redaction import redact
from chatcore_api.settings_sources import (
    SettingsInputs,
    given_sources,
    settings_inputs,
    undecodable_environment,
)

ENV_PREFIX = "CHATCORE_"
CONFIG_ENV = "CHATCORE_CONFIG"
SECRET_KEY_ENV = "CHATCORE_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
MIN_SECRET_CHARS = 32
# Settings that are secrets: read from the environment only, never from the config file.
ENV_ONLY = frozenset({"secret_key", "secret_keys", "metrics_token"})
SECRET_KEYS_ENV = "CHATCORE_SECRET_KEYS"  # noqa: S105 - a variable name, not a secret


def default_web_dir() -> Path | None:
    """The built web client: the copy inside this package when installed from a wheel
    (``chatcore_api/web_client``, put there by ``hatch_build.py``), else the static export of
    a source checkout (``apps/web/out``, built by ``scripts/setup``), else ``None``."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "web_client", package.parent.parent / "web" / "out"):
        if candidate.is_dir():
            return candidate
    return None


class SettingsError(Exception):
    """The settings are unusable; the message says which one and why, with anything that
    looks like a credential taken out (:func:`~chatcore_api.redaction.redact`)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def _split_origins(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def normalise_origin(value: str) -> str:
    """``scheme://host[:port]`` in lower case, without a default port; else ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin like https://chat.example.com")
    if parts.username or parts.password or parts.path not in {"", "/"}:
        raise ValueError(f"{value!r} must be only scheme://host[:port] (no path, no user)")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} must be only scheme://host[:port]")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    default = 443 if parts.scheme == "https" else 80
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def normalise_host_pattern(value: str) -> str:
    """An ``allowed_hosts`` entry in lower case: a host name or address, ``*.<domain>``, or
    ``*``; ValueError for anything else (a scheme, a port, a path)."""
    text = value.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text == "*":
        return text
    name = text.removeprefix("*.")
    if not name or any(c in name for c in "/@?#*[] ") or name.count(":") == 1:
        raise ValueError(
            f"{value!r} is not a host name like chat.example.com, *.example.com or 127.0.0.1 "
            "(no scheme, no port)"
        )
    return text


def _check_key(key: str) -> None:
    if len(key) < MIN_SECRET_CHARS:
        raise ValueError(
            f"a secret key must have at least {MIN_SECRET_CHARS} characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )


class ApiSettings(ChatcoreSettings, LimitSettings, BaseSettings):
    """Everything ``chatcore serve`` can be told: a running chatcore's settings
    (:class:`~chatcore_adapters.settings.ChatcoreSettings`: storage, model, worker), the
    server's limits (:class:`~chatcore_api.limit_settings.LimitSettings`) and what only a
    server needs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
        case_sensitive=False,
    )

    # The bundled server keeps its sessions in a file unless told otherwise.
    default_storage: ClassVar[Storage] = "sqlite"

    # --- where to listen ------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8000, ge=0, le=65535)

    # --- secrets --------------------------------------------------------------------------
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that signs session tokens (at least 32 characters; environment "
        "only: CHATCORE_SECRET_KEY). Required with redis_url; unset with sqlite storage, a key "
        "is made once and kept in data_dir/secret_key (mode 0600); with memory storage, a "
        "random key per process.",
    )
    secret_keys: Annotated[list[SecretStr] | None, NoDecode] = Field(
        default=None,
        description="Keys of a rotation, comma-separated (environment only: "
        "CHATCORE_SECRET_KEYS): the first signs new tokens, every one verifies. Instead of "
        "secret_key, not with it.",
    )
    token_ttl: timedelta = Field(
        default=timedelta(days=7),
        description="How long a session token stays valid; every connection gets a fresh one.",
    )

    # --- who may connect ------------------------------------------------------------------
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed besides the server's own (same-origin is always allowed).",
    )
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="Host names this server answers to (the Host header of every HTTP and "
        "WebSocket request; '*.example.com' for its subdomains, '*' for any). Unset: the names "
        "of the address it binds to (localhost, 127.0.0.1 and ::1 on loopback; any host on "
        "0.0.0.0 or ::, with a warning).",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (10.0.0.0/8) of the reverse proxies in front of the "
        "server, whose X-Forwarded-For and X-Forwarded-Proto are believed. None by default: "
        "the client is the TCP peer.",
    )

    # --- operations endpoints -------------------------------------------------------------
    docs_enabled: bool = Field(
        default=True,
        description="Serve the OpenAPI description (/openapi.json) and its Swagger UI (/docs, "
        "which loads its scripts from a CDN).",
    )
    metrics_enabled: bool = Field(default=True, description="Serve /metrics (Prometheus).")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="If set, /metrics needs 'Authorization: Bearer <token>' (environment "
        "only: CHATCORE_METRICS_TOKEN).",
    )

    # --- limits (and limit_settings.LimitSettings) ----------------------------------------
    max_frame_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    idle_timeout: float = Field(
        default=90.0,
        gt=0,
        le=86_400,
        description="Seconds without any client frame before the server closes (code 4008).",
    )
    hello_timeout: float = Field(default=10.0, gt=0, le=300)
    send_queue_limit: int = Field(
        default=2000,
        ge=16,
        le=1_000_000,
        description="Frames queued for one slow connection before it is closed (code 1013).",
    )
    send_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_replay_events: int = Field(
        default=5000,
        ge=1,
        le=10_000_000,
        description="A resume with more events than this gets a snapshot instead.",
    )

    # --- static files, logs -------------------------------------------------------
    web_dir: Path | None = Field(default_factory=default_web_dir)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("allowed_origins", "allowed_hosts", "trusted_proxies", mode="before")
    @classmethod
    def _origins_list(cls, value: Any) -> Any:
        try:
            return _split_origins(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc}") from exc

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_valid(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [normalise_host_pattern(host) for host in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_valid(cls, value: list[str]) -> list[str]:
        return [str(network) for network in parse_networks(value)]

    @field_validator("allowed_origins")
    @classmethod
    def _origins_valid(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            if origin.strip() in {"*", "null"}:
                raise ValueError(
                    "wildcard and 'null' origins are not allowed; list each origin explicitly"
                )
            out.append(normalise_origin(origin))
        return out

    @field_validator("secret_key")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_key(value.get_secret_value())
        return value

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _keys_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret_keys")
    @classmethod
    def _keys_valid(cls, value: list[SecretStr] | None) -> list[SecretStr] | None:
        if value is None:
            return None
        keys = [key.get_secret_value() for key in value]
        if not keys:
            raise ValueError("name at least one key")
        for key in keys:
            _check_key(key)
        if len(set(keys)) != len(keys):
            raise ValueError("the same key is listed twice")
        return value

    @field_validator("token_ttl", mode="before")
    @classmethod
    def _ttl_seconds(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value  # ISO 8601 durations ("P7D") go to pydantic
        return value

    @field_validator("token_ttl")
    @classmethod
    def _ttl_sane(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=400):
            raise ValueError("token_ttl must be between one minute and 400 days")
        return value

    @model_validator(mode="after")
    def _sessions_outlive_their_tokens(self) -> ApiSettings:
        idle = self.retention.idle_ttl
        if idle is not None and idle < self.token_ttl.total_seconds():
            raise ValueError(
                f"retention.idle_ttl ({idle:g}s) must be at least token_ttl "
                f"({self.token_ttl.total_seconds():g}s): a session must not be deleted while "
                "a token for it is still valid"
            )
        return self

    @field_validator("web_dir", mode="before")
    @classmethod
    def _web_dir_empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None  # CHATCORE_WEB_DIR="" turns the web client off; never "the cwd"
        return value

    @field_validator("web_dir")
    @classmethod
    def _web_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"web_dir {str(value)!r} is not a directory")
        return value

    @model_validator(mode="after")
    def _secret_required_with_redis(self) -> ApiSettings:
        if self.secret_key is not None and self.secret_keys is not None:
            raise ValueError(
                f"set {SECRET_KEY_ENV} or {SECRET_KEYS_ENV}, not both ({SECRET_KEYS_ENV} lists "
                "every key, the signing one first)"
            )
        if self.redis_url is not None and self.secret_key is None and self.secret_keys is None:
            raise ValueError(
                f"{SECRET_KEY_ENV} is required when redis_url is set (or {SECRET_KEYS_ENV}): "
                "every API process must verify the same session tokens"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return given_sources(settings_cls, init_settings, env_settings)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or JSON (anything else) config file into a dict."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the config file {str(path)!r}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"the config file {str(path)!r} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"the config file {str(path)!r} must hold a table/object of settings")
    for name in sorted(ENV_ONLY & set(data)):
        raise SettingsError(
            f"the config file {str(path)!r} sets {name}: secrets are read from the environment "
            f"only ({ENV_PREFIX}{name.upper()}), so they never sit in a file next to the config"
        )
    return data


def _sensitive(name: str) -> bool:
    """Settings whose values must not be echoed (keys, and URLs that may hold passwords)."""
    return any(word in name for word in ("secret", "key", "url", "password", "token"))


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, naming the setting as a user would write it."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc) or "settings"
        env = ENV_PREFIX + "__".join(loc).upper() if loc else ""
        where = f"{name} ({env})" if env else name
        if error["type"] == "extra_forbidden":
            lines.append(f"- {where}: unknown setting")
            continue
        shown = ""
        if "input" in error and error["type"] not in {"missing"} and loc:
            value = error["input"]
            if not isinstance(value, dict | list) and not _sensitive(name):
                text = redact(repr(value))
                shown = f" (got {text[:60]}{'...' if len(text) > 60 else ''})"
        message = redact(error["msg"].removeprefix("Value error, "))
        lines.append(f"- {where}: {message}{shown}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(
    config_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ApiSettings:
    """Build the settings from ``overrides``, the environment and the config file.

    ``config_file`` defaults to ``$CHATCORE_CONFIG``. Raises :class:`SettingsError` with a
    readable message on any problem.
    """
    env = os.environ if environ is None else environ
    # Variables that cannot be right stop the start-up like any other bad setting: a misspelt
    # top-level name (it would be ignored, and the server start on the defaults) and a value
    # that must be JSON and is not (it would end in a traceback).
    problems = [
        f"- {name}: names no setting (nested settings take two underscores, e.g. "
        f"{ENV_PREFIX}LLM__MODEL)"
        for name in unknown_environment(env)
    ] + undecodable_environment(env, ApiSettings, ENV_PREFIX)
    if problems:
        raise SettingsError("invalid settings:\n" + "\n".join(problems))
    path = config_file or env.get(CONFIG_ENV) or None
    data = read_config_file(Path(path)) if path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        with settings_inputs(SettingsInputs(file_data=data, environ=environ)):
            return ApiSettings(**given)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
    except SourceError as exc:  # a value no check above foresaw
        raise SettingsError(f"invalid settings:\n- {exc}") from None


# CHATCORE_* variables that belong to other tools (the test suites, the config file path).
_FOREIGN_ENV = (
    "CHATCORE_CONFIG",
    "CHATCORE_REQUIRE_",
    "CHATCORE_TEST_",
    "CHATCORE_E2E_",
    "CHATCORE_PYTHON",
    "CHATCORE_VENV",
)
# CHATCORE_* variables chatcore reads outside its settings: the event loop is chosen before
# the settings are loaded (chatcore_api.loops).
_OWN_ENV = frozenset({loops.ENV})


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """``CHATCORE_*`` variables that name no setting (nested ones are checked by validation;
    a misspelt top-level name would otherwise be ignored silently): :func:`load_settings`
    refuses them."""
    env = os.environ if environ is None else environ
    known = {name.upper() for name in ApiSettings.model_fields}
    own = {name.upper() for name in _OWN_ENV}
    found = []
    for name in env:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(_FOREIGN_ENV) or upper in own:
            continue
        field_name = upper.removeprefix(ENV_PREFIX).split("__", 1)[0]
        if field_name not in known:
            found.append(name)
    return sorted(found)


def signing_keys(settings: ApiSettings) -> tuple[list[bytes], bool]:
    """The token keys (the signing one first), and whether one was generated for this process
    only (tokens then die with the process). With SQLite storage and no key given, the key
    kept in the data directory (made on first start), so that sessions survive a restart."""
    if settings.secret_keys is not None:
        return [key.get_secret_value().encode("utf-8") for key in settings.secret_keys], False
    if settings.secret_key is not None:
        return [settings.secret_key.get_secret_value().encode("utf-8")], False
    if settings.backend == "sqlite":
        return [stored_secret(settings.data_dir / SECRET_KEY_FILE)], False
    return [secrets.token_bytes(32)], True


SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


def stored_secret(path: Path) -> bytes:
    """The key kept in ``path``, made (random, mode 0600) if there is none. A key file other
    users may read is refused: whoever reads it can sign tokens for any session."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SettingsError(f"cannot create the key file {str(path)!r}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
    try:
        mode = path.stat().st_mode
        key = path.read_text().strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the key file {str(path)!r}: {exc.strerror}") from None
    if mode & 0o077:
        raise SettingsError(
            f"the key file {str(path)!r} may be read by other users (mode {mode & 0o777:o}): "
            f"chmod 600 it (whoever reads it can sign tokens for any session)"
        )
    if len(key) < MIN_SECRET_CHARS:
        raise SettingsError(
            f"the key file {str(path)!r} holds fewer than {MIN_SECRET_CHARS} characters: "
            "delete it to make a new one (every session's token then stops working)"
        )
    return key.encode("utf-8")
