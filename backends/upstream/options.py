"""The `[models.x.options]` table of an `openai` (upstream) model."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from gateway import ConfigError, ModelSpec


class UpstreamOptions(Struct, frozen=True, forbid_unknown_fields=True):
    """Where to forward a model's requests, and how.

    `upstreams`: base URLs ending in the API root, e.g. "http://10.0.0.5:8000/v1".
    `model`: the model name the upstreams know (default: the gateway model id).
    `api_key`: sent as `Authorization: Bearer`; write "${ENV_VAR}" in config.toml.
    `timeout_s`: per upstream attempt, connect until response headers.
    `health_check_interval_s`: seconds between `GET {base}/models` probes; 0 disables.
    `max_connections`: the connection pool size shared by all upstreams of the model.
    """

    upstreams: Annotated[list[str], Meta(min_length=1)]
    model: str | None = None
    api_key: str | None = None
    timeout_s: Annotated[float, Meta(gt=0)] = 30.0
    health_check_interval_s: Annotated[float, Meta(ge=0)] = 10.0
    max_connections: Annotated[int, Meta(ge=1)] = 100

    def __repr__(self) -> str:  # the key is a secret: never in a log line or traceback
        key = "'***'" if self.api_key else "None"
        return f"UpstreamOptions(upstreams={self.upstreams!r}, model={self.model!r}, api_key={key})"


def load_options(spec: ModelSpec) -> UpstreamOptions:
    """Decode and check the options; errors name the key path."""
    options: UpstreamOptions = spec.options_as(UpstreamOptions)
    for index, url in enumerate(options.upstreams):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f'models."{spec.id}".options.upstreams[{index}]: expected an http(s) URL, got "{url}"'
            )
    return options


def base_urls(options: UpstreamOptions) -> list[str]:
    """The upstream URLs without a trailing slash, so paths join as `{base}/chat/completions`."""
    return [url.rstrip("/") for url in options.upstreams]
