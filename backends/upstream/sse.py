"""Server-sent events from a stream of lines: the `data` of each event, as it arrives.

Only what chat-completion streams use: `data:` lines (joined with newlines when
an event has several), comments (keep-alives) skipped, a blank line ends an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Each event's data; events without data (comments, `event:`-only) are skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith("data:"):
            value = line[5:]
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)
