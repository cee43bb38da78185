"""Per-request state shared by the gateway and plugins."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Identity:
    """Who is calling, as decided by an `authenticate` hook. Never holds the secret."""

    key_id: str
    allowed_models: frozenset[str] = frozenset({"*"})
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timings:
    """Monotonic timestamps of a request's milestones (seconds)."""

    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished: float | None = None

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.started) * 1000

    @property
    def latency_ms(self) -> float | None:
        return None if self.finished is None else (self.finished - self.started) * 1000


@dataclass
class RequestContext:
    """Everything about one request that is not the request body.

    `state` is free for plugins to share data between their hooks (namespace
    keys by plugin name).
    """

    request_id: str
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    client_request_id: str | None = None  # the caller's own `x-request-id`, when well-formed
    model: str = ""
    backend: str = ""
    stream: bool = False
    identity: Identity | None = None
    status_code: int = 200
    timings: Timings = field(default_factory=Timings)
    state: dict[str, Any] = field(default_factory=dict)


_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def client_request_id(headers: dict[str, str]) -> str | None:
    """The `x-request-id` a caller (say, a gateway in front) sent, if it is safe to log."""
    value = headers.get("x-request-id")
    return value if value is not None and _CLIENT_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    """Random and unique enough for tracing, without a system call per request (uuid4 makes one)."""
    return f"req_{random.getrandbits(128):032x}"
