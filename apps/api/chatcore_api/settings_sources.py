"""Where a load of the settings reads from, besides values passed in code: the environment (or a
mapping standing in for it, for tests and tools) and an already-parsed config file, weakest of
all after the defaults. :func:`settings_inputs` names them for one load."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
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
