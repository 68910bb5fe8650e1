"""Where a load of the settings reads from, besides values passed in code: the environment (or a
mapping standing in for it, for tests and tools) and an already-parsed config file, weakest of
all after the defaults. :func:`settings_inputs` names them for one load;
:func:`undecodable_environment` finds the variables that cannot even be read."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars


@dataclass(frozen=True, slots=True)
class SettingsInputs:
    """What one load reads besides the defaults: the parsed config file, and the environment
    (``None``: ``os.environ``)."""

    file_data: Mapping[str, Any] = field(default_factory=dict)
    environ: Mapping[str, str] | None = None


_GIVEN: ContextVar[SettingsInputs | None] = ContextVar("chatcore_settings_inputs", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables from a given mapping instead of ``os.environ`` (tests, tools)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The already-parsed config file, weakest of the sources after the defaults."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


@contextmanager
def settings_inputs(inputs: SettingsInputs) -> Iterator[None]:
    token = _GIVEN.set(inputs)
    try:
        yield
    finally:
        _GIVEN.reset(token)


def given_sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of the load under way, strongest first: code, environment, config file."""
    inputs = _GIVEN.get() or SettingsInputs()
    if inputs.environ is not None:
        env_settings = _MappingEnvSource(settings_cls, inputs.environ)
    return (init_settings, env_settings, _ConfigFileSource(settings_cls, inputs.file_data))


def _complex(annotation: Any) -> bool:
    """True for settings a variable must spell as JSON (lists, tables, nested models)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _complex(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return any(_complex(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin in (list, tuple, dict, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_at(model: type[BaseModel], path: list[str]) -> FieldInfo | None:
    field: FieldInfo | None = None
    current: Any = model
    for key in path:
        fields = getattr(current, "model_fields", None)
        if not isinstance(fields, dict) or key not in fields:
            return None
        field = fields[key]
        current = field.annotation
    return field


def undecodable_environment(
    environ: Mapping[str, str], model: type[BaseModel], prefix: str
) -> list[str]:
    """One line per ``<prefix>*`` variable whose setting must be JSON and whose value is not,
    naming the variable (read as it is, pydantic-settings would stop with a traceback that
    names only the top-level setting)."""
    found = []
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(prefix) or not value.strip():
            continue
        path = upper.removeprefix(prefix).lower().split("__")
        field = _field_at(model, path)
        if field is None or NoDecode in field.metadata or not _complex(field.annotation):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as exc:
            found.append(
                f"- {'.'.join(path)} ({upper}): not valid JSON ({exc.msg} at character {exc.pos})"
            )
    return sorted(found)
