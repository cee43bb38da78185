"""config.toml, decoded with tomli into msgspec Structs.

Errors name the key path and the reason, e.g.
`models."llama".max_tokens: expected int, got str`. String values may hold
`${ENV_VAR}` references (for secrets), expanded at load time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import msgspec
import tomli
from msgspec import Meta, Struct


class ConfigError(Exception):
    """The config cannot be used; the message names the key and the reason."""


class ServerConfig(Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    log_format: str = "auto"  # "json", "console" or "auto" (console on a terminal)
    log_level: str = "info"
    max_tool_rounds: Annotated[int, Meta(ge=0)] = 4


class PluginsConfig(Struct, frozen=True, forbid_unknown_fields=True):
    """Which plugins run: entry points are found automatically, `modules` are added,
    `disabled` names are never registered (built-in ones included)."""

    modules: list[str] = []
    disabled: list[str] = []
    settings: dict[str, dict[str, Any]] = {}


class SamplingDefaults(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Per-model defaults, applied to request fields the client left unset."""

    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    repetition_context_size: Annotated[int, Meta(ge=1)] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None


class ModelConfig(Struct, forbid_unknown_fields=True):
    """One `[models."<id>"]` table.

    `options` is the backend's own table (its keys are checked by the backend).
    `max_tokens` caps every request; `default_max_tokens` is used when a request
    sets none.
    """

    backend: str
    path: str | None = None
    aliases: list[str] = []
    preload: bool = False
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    default_max_tokens: Annotated[int, Meta(ge=1)] = 512
    defaults: SamplingDefaults = SamplingDefaults()
    options: dict[str, Any] = {}


class GatewayConfig(Struct, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    plugins: PluginsConfig = PluginsConfig()
    models: dict[str, ModelConfig] = {}

    def with_models(self, models: dict[str, ModelConfig]) -> GatewayConfig:
        config = msgspec.structs.replace(self, models=models)
        config.check_aliases()
        return config

    def check_aliases(self) -> None:
        seen: dict[str, str] = {}
        for model_id, model in self.models.items():
            for name in (model_id, *model.aliases):
                if name in seen and seen[name] != model_id:
                    raise ConfigError(
                        f'models."{model_id}".aliases: "{name}" is already used by "{seen[name]}"'
                    )
                seen[name] = model_id


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: Any, path: str = "") -> Any:
    """Replace `${NAME}` in every string with the environment variable's value."""
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REFERENCE.sub(lookup, value)
    if isinstance(value, dict):
        return {key: expand_env(item, _join(path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'
    return f"{path}.{part}" if path else part


def _describe(error: msgspec.ValidationError, prefix: str) -> str:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.a.b`' into 'prefix.a.b: expected int, got str'."""
    reason, _, where = str(error).partition(" - at `")
    path = prefix
    for key in re.findall(r"\.([A-Za-z0-9_-]+)", where.rstrip("`").removeprefix("$")):
        path = _join(path, key)
    reason = reason.replace("`", "").replace("Expected", "expected")
    unknown = re.fullmatch(r"Object contains unknown field (.+)", reason)
    missing = re.fullmatch(r"Object missing required field (.+)", reason)
    if unknown:
        reason = f"unknown key '{unknown.group(1)}'"
    elif missing:
        reason = f"missing required key '{missing.group(1)}'"
    return f"{path}: {reason}" if path else reason


def _convert(value: Any, type_: type[Any], path: str) -> Any:
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as error:
        raise ConfigError(_describe(error, path)) from None


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Decode a config table; models are decoded one by one so errors name their id."""
    data = expand_env(data)
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("models: expected a table")
    decoded = {
        model_id: _convert(table, ModelConfig, f'models."{model_id}"') for model_id, table in models.items()
    }
    return _convert({**data, "models": {}}, GatewayConfig, "").with_models(decoded)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    try:
        with Path(path).open("rb") as file:
            data = tomli.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomli.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_config(data)
