"""config.toml, decoded with tomli into msgspec Structs.

Errors name the key path and the reason, e.g.
`models."llama".max_tokens: expected int, got str`. String values may hold
`${ENV_VAR}` references (for secrets), expanded at load time.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import tomli
from msgspec import Meta, Struct

from gateway.protocol import SAMPLING_FIELDS, ChatCompletionRequest

T = TypeVar("T")


class ConfigError(Exception):
    """The config cannot be used; the message names the key and the reason."""


class ServerConfig(Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8000
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 4 * 1024 * 1024
    log_format: Literal["json", "console", "auto"] = "auto"  # auto: console on a terminal
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    max_tool_rounds: Annotated[int, Meta(ge=0)] = 4
    # Bytes ("24GiB", 25769803776) or a share of RAM ("75%") that loaded models may use.
    memory_budget: int | str | None = None
    # Unload a model idle this long (seconds); 0 keeps models loaded. Per-model `ttl_s` wins.
    model_ttl_s: Annotated[float, Meta(ge=0)] = 0.0
    # Required as a Bearer token on /admin/* when set; unset, /admin/* answers loopback clients only.
    admin_key: str | None = None
    # Stored Responses API answers (`store: true`, for `previous_response_id` and GET): the
    # oldest are evicted past either cap.
    responses_store_max_count: Annotated[int, Meta(ge=0)] = 1000
    responses_store_max_bytes: Annotated[int, Meta(ge=0)] = 64 * 1024 * 1024
    # The `max_tokens` ceiling of every model whose config sets none, unless its backend bounds
    # max_tokens itself (MLX: by the model's context length).
    max_tokens: Annotated[int, Meta(ge=1)] = 32768
    # SIGTERM/SIGINT: answer new requests 503, let running ones finish this long, then end them.
    shutdown_timeout_s: Annotated[float, Meta(ge=0)] = 30.0
    # A whole request, streams included (unset: no limit); a request over it ends with `request_timeout`.
    request_timeout_s: Annotated[float, Meta(gt=0)] | None = None
    # Slow clients: headers must arrive within `header_timeout_s`, each piece of the body within
    # `body_timeout_s`, and each write of the answer must be taken within `write_timeout_s`
    # (a client that stops reading is cut, and its slot freed). Idle keep-alive connections close
    # after `keep_alive_timeout_s`.
    header_timeout_s: Annotated[float, Meta(gt=0)] = 10.0
    body_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    write_timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    keep_alive_timeout_s: Annotated[int, Meta(ge=1)] = 5
    # A stream whose first event is slow (queue wait, long prefill) sends `: keep-alive` comments
    # this often, so proxies keep the connection (unset: none). See gateway/keepalive.py.
    sse_keepalive_s: Annotated[float, Meta(gt=0)] | None = 15.0
    # `GET /metrics` (Prometheus): on by default, guarded like /admin/* unless `metrics_public`.
    metrics: bool = True
    metrics_public: bool = False
    # CORS for browser clients: off unless origins are listed ("*" allows any origin).
    cors_origins: list[str] = []


class PluginsConfig(Struct, frozen=True, forbid_unknown_fields=True):
    """Which plugins run: entry points are found automatically, `modules` are added,
    `disabled` names are never registered (built-in ones included)."""

    modules: list[str] = []
    disabled: list[str] = []
    settings: dict[str, dict[str, Any]] = {}

    def settings_for(self, name: str, type_: type[T]) -> T:
        """Decode `[plugins.settings.<name>]` (empty if absent) into a plugin's own Struct.

        Errors name the key path, e.g. `plugins.settings.auth.keys[0].key: expected str, got int`.
        """
        return convert_config(self.settings.get(name, {}), type_, _join("plugins.settings", name))


def _sampling_defaults() -> type[Struct]:
    """Per-model defaults, applied to request fields the client left unset: the request's
    sampling fields (`gateway.protocol.FIELDS`), with the request's types and ranges."""
    request_fields = msgspec.structs.fields(ChatCompletionRequest)
    return msgspec.defstruct(
        "SamplingDefaults",
        [(f.name, f.type, None) for f in request_fields if f.name in SAMPLING_FIELDS],
        module=__name__,
        frozen=True,
        forbid_unknown_fields=True,
        omit_defaults=True,
    )


SamplingDefaults = _sampling_defaults()


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
    pin: bool = False  # never evicted to make room, never unloaded for idleness
    ttl_s: Annotated[float, Meta(ge=0)] | None = None
    memory_bytes: Annotated[int, Meta(ge=0)] | None = None  # overrides the backend's estimate
    max_concurrency: Annotated[int, Meta(ge=1)] | None = None  # requests generating at once
    max_queue: Annotated[int, Meta(ge=0)] = 256  # requests waiting beyond that; more get 429
    queue_timeout_s: Annotated[float, Meta(gt=0)] = 120.0
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    default_max_tokens: Annotated[int, Meta(ge=1)] = 512
    defaults: SamplingDefaults = SamplingDefaults()
    options: dict[str, Any] = {}


class GatewayConfig(Struct, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    plugins: PluginsConfig = PluginsConfig()
    models: dict[str, ModelConfig] = {}

    def memory_budget_bytes(self) -> int | None:
        return parse_bytes(self.server.memory_budget, "server.memory_budget")

    def model_id(self, name: str) -> str | None:
        """The configured model id for a model id or alias; None if no model has that name."""
        if name in self.models:
            return name
        return next((model_id for model_id, model in self.models.items() if name in model.aliases), None)

    def with_models(self, models: dict[str, ModelConfig]) -> GatewayConfig:
        config = msgspec.structs.replace(self, models=models)
        config.check_aliases()
        config.memory_budget_bytes()
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


def missing_local_paths(config: GatewayConfig, base: Path | None = None) -> list[str]:
    """Problems with models whose `path` names this machine's files (`/`, `.`, `~`) that
    are not there; relative paths count from `base` (default: the working directory)."""
    problems = []
    for model_id, model in config.models.items():
        path = model.path or ""
        if not path.startswith(("/", ".", "~")):
            continue
        target = Path(path).expanduser()
        if base is not None and not target.is_absolute():
            target = base / target
        if not target.exists():
            problems.append(f'models."{model_id}".path: no such file or directory: "{path}"')
    return problems


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | str | None, key: str) -> int | None:
    """`25769803776`, `"24GiB"`, `"512MB"` or `"75%"` (of physical memory) as bytes."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().lower().replace(" ", "")
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        return int(share * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    match = re.fullmatch(r"([0-9.]+)([a-z]*)", text)
    if not match or match.group(2) not in _UNITS:
        raise ConfigError(f'{key}: expected bytes like "24GiB", "512MB" or "75%", got "{value}"')
    return int(float(match.group(1)) * _UNITS[match.group(2)])


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


def _describe(error: msgspec.ValidationError, prefix: str, type_: Any = None) -> str:
    """Turn msgspec's 'Expected `int`, got `str` - at `$.a.b`' into 'prefix.a.b: expected int, got str',
    with the allowed values of an enum and the nearest key for an unknown one."""
    reason, _, where = str(error).partition(" - at `")
    path = prefix
    steps = re.findall(r"\.([A-Za-z0-9_-]+)|(\[\d+\])", where.rstrip("`").removeprefix("$"))
    for key, index in steps:
        path = _join(path, key) if key else path + index
    reason = reason.replace("`", "").replace("Expected", "expected")
    unknown = re.fullmatch(r"Object contains unknown field (.+)", reason)
    missing = re.fullmatch(r"Object missing required field (.+)", reason)
    target = _type_at(type_, [key or None for key, _ in steps]) if type_ is not None else None
    if unknown:
        reason = f"unknown key '{unknown.group(1)}'"
        keys = [field.encode_name for field in getattr(target, "fields", ())]
        close = difflib.get_close_matches(unknown.group(1), keys, n=1)
        if close:
            reason += f"; did you mean '{close[0]}'?"
    elif missing:
        reason = f"missing required key '{missing.group(1)}'"
    elif reason.startswith("Invalid enum value "):
        reason = "invalid value " + reason.removeprefix("Invalid enum value ")
        allowed = _literal_values(target)
        if allowed:
            reason += f"; allowed: {', '.join(repr(value) for value in allowed)}"
    return f"{path}: {reason}" if path else reason


def _type_at(type_: Any, keys: list[str | None]) -> Any:
    """The `msgspec.inspect` type found by following `keys` (None: a list index) from `type_`."""
    current: Any = msgspec.inspect.type_info(type_)
    for key in keys:
        current = _step(current, key)
        if current is None:
            return None
    return current


def _step(current: Any, key: str | None) -> Any:
    inspect = msgspec.inspect
    if isinstance(current, inspect.UnionType):
        found = [_step(member, key) for member in current.types]
        return next((item for item in found if item is not None), None)
    if key is None:
        return getattr(current, "item_type", None)
    if isinstance(current, inspect.StructType):
        return next((field.type for field in current.fields if field.encode_name == key), None)
    if isinstance(current, inspect.DictType):
        return current.value_type
    return None


def _literal_values(target: Any) -> list[Any]:
    inspect = msgspec.inspect
    members = target.types if isinstance(target, inspect.UnionType) else (target,)
    return [value for member in members if isinstance(member, inspect.LiteralType) for value in member.values]


def convert_config(value: Any, type_: type[Any], path: str) -> Any:
    """`value` as `type_`; a mistake is a ConfigError naming its key path under `path`."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as error:
        raise ConfigError(_describe(error, path, type_)) from None


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Decode a config table; models are decoded one by one so errors name their id."""
    data = expand_env(data)
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("models: expected a table")
    decoded = {
        model_id: convert_config(table, ModelConfig, f'models."{model_id}"')
        for model_id, table in models.items()
    }
    return convert_config({**data, "models": {}}, GatewayConfig, "").with_models(decoded)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    try:
        with Path(path).open("rb") as file:
            data = tomli.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomli.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    return parse_config(data)
