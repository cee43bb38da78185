"""A real uvicorn server on a free loopback port, run in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from litestar import Litestar


@contextmanager
def running_server(app: Litestar, port: int = 0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<port> (default: a free one); yields `http://127.0.0.1:PORT`."""
    from gateway.lifecycle import uvicorn_config  # the protocol and timeouts `gateway serve` runs with

    config = uvicorn_config(app, app.state.config.server, host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
