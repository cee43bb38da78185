"""Operator routes: `GET /ready` (readiness) and `GET /metrics` (Prometheus).

`/health` (in `gateway.routes`) is liveness: the process answers. `/ready` says
whether to send it traffic: 200 when every preloaded model is loaded, no model's
load has failed and the server is not draining; 503 otherwise, with the reasons.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway.admin import check_admin
from gateway.metrics import CONTENT_TYPE

_encode = msgspec.json.Encoder().encode


def readiness(state: Any) -> list[str]:
    """Why the server should not get traffic now (empty: ready)."""
    reasons = ["draining"] if state.lifecycle.draining else []
    for entry in state.registry.entries.values():
        if entry.status == "failed":
            reasons.append(f"model '{entry.id}' failed to load")
        elif entry.config.preload and entry.status != "loaded":
            reasons.append(f"model '{entry.id}' is {entry.status}")
    return reasons


@get("/ready", summary="Readiness", include_in_schema=True)
async def ready(request: Request[Any, Any, Any]) -> Response[Any]:
    reasons = readiness(request.app.state)
    body = {"status": "not_ready", "reasons": reasons} if reasons else {"status": "ready"}
    return Response(content=_encode(body), status_code=503 if reasons else 200, media_type="application/json")


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[Any]:
    """Served only when `server.metrics` is on (the app leaves the route out otherwise)."""
    state = request.app.state
    if not state.config.server.metrics_public:
        check_admin(request, log_success=False)  # scraped every few seconds: refusals only
    return Response(content=state.metrics.render(), media_type=CONTENT_TYPE)
