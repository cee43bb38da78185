"""Per-model admission: a limit on running requests and a bounded FIFO queue.

Requests beyond `max_running` wait in arrival order (no starvation); beyond
`max_queued` they are refused at once with 429 and `Retry-After`; a request that
waits longer than `queue_timeout_s` gets 503. A slot is released exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import time

from gateway.errors import BackendUnavailable, RateLimited


class Slot:
    """A held place among the running requests; `release()` is idempotent."""

    __slots__ = ("_admission", "_released")

    def __init__(self, admission: Admission | None) -> None:
        self._admission = admission
        self._released = admission is None

    def release(self) -> None:
        if not self._released:
            self._released = True
            assert self._admission is not None
            self._admission._release()


class Admission:
    def __init__(self, max_running: int | None, max_queued: int, queue_timeout_s: float) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._recent_wait_s = 1.0

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> Slot:
        if self.max_running is None:
            self.running += 1
            return Slot(self)
        if self.running < self.max_running and not self._waiters:
            self.running += 1
            return Slot(self)
        if len(self._waiters) >= self.max_queued:
            raise RateLimited(
                f"too many requests queued for this model ({self.max_queued}); retry later",
                retry_after=self._recent_wait_s,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        queued_at = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except (TimeoutError, asyncio.CancelledError) as error:
            if waiter.done():  # granted just as we gave up
                if isinstance(error, TimeoutError):
                    return Slot(self)
                self._release()  # the client left: pass the slot on
                raise
            waiter.cancel()
            self._waiters.remove(waiter)
            if isinstance(error, asyncio.CancelledError):
                raise
            raise BackendUnavailable(
                f"waited {self.queue_timeout_s:g}s in this model's queue without a free slot",
                code="queue_timeout",
                headers={"Retry-After": str(max(1, round(self._recent_wait_s)))},
            ) from None
        self._recent_wait_s = max(0.5 * self._recent_wait_s + 0.5 * (time.monotonic() - queued_at), 0.1)
        return Slot(self)

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set_result(None)  # the slot passes to the oldest waiter
        else:
            self.running -= 1
