"""An `async def` implementation of the sync-only `on_chunk` hook."""

from gateway import hookimpl


@hookimpl
async def on_chunk(chunk):
    return None
