"""gateway/keepalive.py: comments while the first event is slow, nothing otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.keepalive import COMMENT, start_stream


async def events(first_after_s: float, fail: bool = False) -> AsyncIterator[bytes]:
    await asyncio.sleep(first_after_s)
    if fail:
        raise ValueError("no slot")
    yield b"data: 1\n\n"
    yield b"data: [DONE]\n\n"


async def error_event(error: Exception) -> bytes:
    return f"data: error {error}\n\n".encode()


async def collect(
    first_after_s: float, interval_s: float | None, fail: bool = False
) -> tuple[bytes | None, list[bytes]]:
    first, rest = await start_stream(events(first_after_s, fail), interval_s, error_event)
    return first, [item async for item in rest]


def test_a_prompt_first_event_changes_nothing() -> None:
    first, rest = asyncio.run(collect(0.0, 0.2))
    assert (first, rest) == (b"data: 1\n\n", [b"data: [DONE]\n\n"])
    assert asyncio.run(collect(0.0, None))[0] == b"data: 1\n\n"


def test_an_early_error_is_raised_so_it_keeps_its_status() -> None:
    with pytest.raises(ValueError):
        asyncio.run(collect(0.0, 0.2, fail=True))


def test_a_slow_first_event_gets_comments_before_it() -> None:
    first, rest = asyncio.run(collect(0.35, 0.1))
    assert first is None
    assert rest[:2] == [COMMENT, COMMENT] and rest[-2:] == [b"data: 1\n\n", b"data: [DONE]\n\n"]


def test_a_late_error_becomes_an_error_event() -> None:
    first, rest = asyncio.run(collect(0.25, 0.1, fail=True))
    assert first is None and rest[0] == COMMENT and rest[-1] == b"data: error no slot\n\n"
