"""SSE keep-alive comments while a stream waits for its first event.

A stream's first chunk may take long (a queue wait, a long prefill). Until it
comes no byte is sent, so a proxy with an idle timeout may cut the connection.
`start_stream` waits for the first event a short while; if it comes in time (or
fails in time), nothing changes: the route answers as it does today, and an
early error keeps its HTTP status. If not, the response starts now and sends
`: keep-alive` comments every `interval_s` until the first event arrives; an
error after that becomes the error event that `on_failure` gives.

Only the wait for the first event is watched: after it the events pass through
untouched, at no cost per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

COMMENT = b": keep-alive\n\n"


async def start_stream(
    events: AsyncIterator[bytes],
    interval_s: float | None,
    on_failure: Callable[[Exception], Awaitable[bytes]],
) -> tuple[bytes | None, AsyncIterator[bytes]]:
    """`(first, rest)` when the first event came within `interval_s` (raising as `anext`
    does); else `(None, stream)`, a stream of comments, then the events.

    For the route: `first, rest = await start_stream(events, keepalive_s, error_event)`;
    then stream `_prepend(first, rest)` when `first` is not None, else `rest`. The
    route's `_failure` (for `on_error` and the status) belongs in `on_failure`,
    which returns the `data: {...}` error event to send."""
    if interval_s is None:
        return await anext(events), events  # type: ignore[call-overload]
    pending = asyncio.ensure_future(anext(events))  # type: ignore[arg-type]
    try:
        done, _ = await asyncio.wait({pending}, timeout=interval_s)
    except BaseException:
        pending.cancel()
        raise
    if done:
        return pending.result(), events
    return None, _comments_then(pending, events, interval_s, on_failure)


async def _comments_then(
    pending: asyncio.Future[bytes],
    events: AsyncIterator[bytes],
    interval_s: float,
    on_failure: Callable[[Exception], Awaitable[bytes]],
) -> AsyncIterator[bytes]:
    async with aclosing(events):  # type: ignore[type-var]
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=interval_s)
                if done:
                    break
                yield COMMENT
        finally:
            if not pending.done():
                pending.cancel()
        try:
            first = pending.result()
        except StopAsyncIteration:
            return
        except Exception as error:  # noqa: BLE001 - the headers are sent: an error event now
            yield await on_failure(error)
            return
        yield first
        async for event in events:
            yield event
