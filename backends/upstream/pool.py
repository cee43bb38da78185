"""The upstreams of one model: which to ask next, and which are healthy.

Balancing is least outstanding requests, ties broken round-robin, so equal
replicas share sequential traffic evenly and a replica stuck on long answers
gets fewer new ones. An unhealthy upstream is skipped until a health check
(`GET {base}/models`, any answer below 500) finds it alive again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass

import httpx
import structlog

log = structlog.get_logger("backends.upstream")


@dataclass(eq=False)
class Upstream:
    url: str
    outstanding: int = 0
    healthy: bool = True


class UpstreamPool:
    def __init__(self, urls: list[str], model: str) -> None:
        self.upstreams = [Upstream(url) for url in urls]
        self.model = model
        self._next = 0

    def pick(self, exclude: Collection[Upstream] = ()) -> Upstream | None:
        """The healthy upstream, not in `exclude`, with the fewest requests in flight."""
        count = len(self.upstreams)
        best: Upstream | None = None
        for offset in range(count):
            upstream = self.upstreams[(self._next + offset) % count]
            if not upstream.healthy or upstream in exclude:
                continue
            if best is None or upstream.outstanding < best.outstanding:
                best = upstream
        if best is not None:
            self._next = (self.upstreams.index(best) + 1) % count
        return best

    def set_health(self, upstream: Upstream, healthy: bool, reason: str = "") -> None:
        if upstream.healthy == healthy:
            return
        upstream.healthy = healthy
        if healthy:
            log.info("upstream healthy again", model=self.model, upstream=upstream.url)
        else:
            log.warning("upstream unhealthy", model=self.model, upstream=upstream.url, reason=reason)


class HealthChecker:
    """Probes every upstream each `interval_s`, in a task owned by the backend."""

    def __init__(
        self, pool: UpstreamPool, client: httpx.AsyncClient, interval_s: float, timeout_s: float
    ) -> None:
        self.pool = pool
        self.client = client
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"health checks for {self.pool.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)

    async def check_all(self) -> None:
        await asyncio.gather(*(self._check(upstream) for upstream in self.pool.upstreams))

    async def _check(self, upstream: Upstream) -> None:
        try:
            response = await self.client.get(f"{upstream.url}/models", timeout=self.timeout_s)
        except httpx.HTTPError as error:
            self.pool.set_health(upstream, False, f"health check: {type(error).__name__}")
            return
        # Alive is what matters here: a 401 or 404 is reported better by the requests themselves.
        alive = response.status_code < 500
        self.pool.set_health(upstream, alive, f"health check: HTTP {response.status_code}")
