"""API keys: who may call, which models, and how often.

    [[plugins.settings.auth.keys]]
    id = "alice"                 # a name for logs and errors, never the secret
    key = "${ALICE_API_KEY}"     # the secret, best taken from the environment
    models = ["echo", "llama"]   # ids or aliases; ["*"] (the default) allows every model
    requests_per_minute = 60     # optional
    tokens_per_minute = 20000    # optional: prompt + completion tokens

Clients send `Authorization: Bearer <key>` (as the openai client does) or
`x-api-key: <key>` (as the anthropic client does). Missing or unknown key: 401.
A model the key may not use: 403, enforced by the gateway from
`Identity.allowed_models`. Over a limit: 429 with `Retry-After`; every
authenticated generation counts (listing models and counting a prompt's tokens
need a key but count for nothing), and tokens are counted when a request finishes.
With no keys the gateway is open, and says so at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Annotated

import msgspec
import structlog

from gateway import (
    AuthenticationFailed,
    ChatCompletion,
    ConfigError,
    GatewayConfig,
    Identity,
    RateLimited,
    RequestContext,
    hookimpl,
)

log = structlog.get_logger("plugins.auth")
# Cheap, and called often: health checks list models; Claude Code counts tokens per tool.
_UNMETERED = frozenset({"models", "count_tokens"})
PerMinute = Annotated[int, msgspec.Meta(ge=1)]


class KeySettings(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1)]
    key: Annotated[str, msgspec.Meta(min_length=1)]
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None


class AuthSettings(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[KeySettings] = []


class Bucket:
    """A token bucket holding up to `per_minute`, refilled continuously."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0
        self.updated = now

    def wait_s(self, now: float) -> float:
        """Seconds until the bucket holds at least one unit again (0: now)."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.level >= 1 else (1 - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount  # may go below zero: a big answer delays the next request


class ApiKey:
    """One configured key: its identity, the hash of its secret, its buckets."""

    def __init__(self, settings: KeySettings, models: frozenset[str], now: float) -> None:
        self.digest = _digest(settings.key)
        self.identity = Identity(key_id=settings.id, allowed_models=models)
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        self.requests = Bucket(rpm, now) if rpm else None
        self.tokens = Bucket(tpm, now) if tpm else None


class ApiKeyAuth:
    def __init__(
        self,
        settings: AuthSettings,
        model_id: Callable[[str], str | None] = lambda name: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.keys = [ApiKey(key, _allowed(key.models, model_id), clock()) for key in settings.keys]
        # Secrets that matched a key, as presented: a dict lookup instead of a hash and a
        # comparison with every key. It holds only the configured secrets (a wrong one is
        # never added), and a lookup's time depends on the string's hash, not on the keys.
        self.matched: dict[str, ApiKey] = {}

    def find(self, secret: str) -> ApiKey | None:
        """A secret that matched before is looked up; any other is compared with every key
        in constant time, so timing reveals nothing of the keys."""
        found = self.matched.get(secret)
        if found is not None:
            return found
        digest = _digest(secret)
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        if found is not None:
            self.matched[secret] = found
        return found

    @hookimpl
    def authenticate(self, headers: dict[str, str], context: RequestContext) -> Identity:
        secret = presented_key(headers)
        if secret is None:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>' or an 'x-api-key' header"
            )
        key = self.find(secret)
        if key is None:
            raise AuthenticationFailed("Incorrect API key provided")
        if context.endpoint in _UNMETERED:
            return key.identity
        requests, tokens = key.requests, key.tokens
        if requests is not None or tokens is not None:
            now = self.clock()
            waits = (requests.wait_s(now) if requests else 0.0, tokens.wait_s(now) if tokens else 0.0)
            if any(waits):
                limit = "requests" if requests and requests.level < 1 else "tokens"
                context.identity = key.identity  # who was refused: the access log's key_id
                raise RateLimited(
                    f"Rate limit reached for key '{key.identity.key_id}' ({limit} per minute)",
                    retry_after=max(waits),
                )
            if requests is not None:
                requests.take(1)
        context.state["auth"] = key
        return key.identity

    @hookimpl
    def on_error(self, error: Exception, context: RequestContext) -> None:
        """A request refused before authentication ran (a body that does not decode)
        still names its key in the access log, which runs after this hook."""
        if context.identity is None:
            secret = presented_key(context.headers)
            key = self.find(secret) if secret else None
            if key is not None:
                context.identity = key.identity


class TokenLimitedAuth(ApiKeyAuth):
    """Also counts tokens, for keys with `tokens_per_minute` (a hook call only where needed)."""

    @hookimpl
    def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        key = context.state.get("auth")
        if key is not None and key.tokens is not None:
            key.tokens.take(response.usage.total_tokens)


class OpenGateway:
    """No keys configured: nothing to check, but nobody should be surprised."""

    @hookimpl
    def gateway_startup(self) -> None:
        log.warning("no API keys in [plugins.settings.auth]: the gateway accepts every request")


def presented_key(headers: dict[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip() or None


def _allowed(models: list[str], model_id: Callable[[str], str | None]) -> frozenset[str]:
    """The names as configured plus the model ids their aliases stand for."""
    return frozenset(models) | {model_id(name) or name for name in models}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def make_plugin(config: GatewayConfig) -> ApiKeyAuth | OpenGateway:
    settings = config.plugins.settings_for("auth", AuthSettings)
    ids, digests = set(), set()
    for index, key in enumerate(settings.keys):
        if key.id in ids:
            raise ConfigError(f"plugins.settings.auth.keys[{index}].id: '{key.id}' is used twice")
        if _digest(key.key) in digests:
            raise ConfigError(f"plugins.settings.auth.keys[{index}].key: the same secret as another key")
        ids.add(key.id)
        digests.add(_digest(key.key))
    if not settings.keys:
        return OpenGateway()
    metered = any(key.tokens_per_minute for key in settings.keys)
    return (TokenLimitedAuth if metered else ApiKeyAuth)(settings, config.model_id)
