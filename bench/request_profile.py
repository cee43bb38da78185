"""Per-request CPU cost of the gateway, in process: no socket, no HTTP parser.

The app is driven through ASGI with a fake `receive`/`send` in a loop (the
lifespan started once), so what is measured is the gateway's own Python work
per request: the `Guard` middleware, Litestar's routing, the endpoint, the
pipeline, hooks and plugins. Three apps: the bare Litestar ceiling
(`bench.ceiling`), the gateway with the echo backend, and the gateway with
auth, rewrite, tools and request_log on (their configs are
`bench.gateway_overhead`'s). The figure is microseconds per request (median of
rounds); `--profile NAME` prints a cProfile of that app's loop instead.

    python -m bench.request_profile                   # us/request, each app
    python -m bench.request_profile --profile plugins # where the time goes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.gateway_overhead import API_KEY, BODY, GATEWAY_CONFIG, PLUGINS_CONFIG

PATH = "/v1/chat/completions"


def _scope(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    raw = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    raw.append((b"content-length", str(len(body)).encode()))
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _lifespan(app: Any) -> Callable[[], Any]:
    """Start the app's lifespan; returns the coroutine function that stops it."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {started}")

    async def stop() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return stop


async def _one(app: Any, scope: dict[str, Any], body: bytes, sink: list[Any]) -> None:
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        sink.append(event)

    await app(dict(scope), receive, send)


async def _measure(
    app: Any, headers: dict[str, str], requests: int, rounds: int, profile: bool
) -> list[float]:
    body = json.dumps(BODY).encode()
    scope = _scope(headers, body)
    stop = await _lifespan(app)
    sink: list[Any] = []
    await _one(app, scope, body, sink)
    status = sink[0]["status"]
    answer = json.loads(sink[1]["body"])
    if status != 200 or answer["choices"][0]["message"]["content"] != "hello there":
        raise RuntimeError(f"unexpected answer: {status} {answer}")
    for _ in range(200):  # warm-up
        await _one(app, scope, body, [])
        await asyncio.sleep(0)  # a turn for work scheduled after the answer (access log)
    per_request = []
    profiler = cProfile.Profile() if profile else None
    for _ in range(rounds):
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        for _ in range(requests):
            await _one(app, scope, body, [])
            await asyncio.sleep(0)
        if profiler is not None:
            profiler.disable()
        per_request.append((time.process_time() - started) / requests * 1e6)
    await stop()
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
        stats.print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        print(out.getvalue())
    return per_request


def _gateway_app(config_text: str, log_file: Any) -> Any:
    from gateway.app import create_app
    from gateway.config import load_config
    from gateway.logs import configure_logging

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(config_text)
    try:
        config = load_config(handle.name)
    finally:
        os.unlink(handle.name)
    sys.stderr = log_file  # the access log's lines go here, as the servers' go to a file
    configure_logging("json", "info")
    return create_app(config)


def _apps(log_file: Any) -> dict[str, tuple[Callable[[], Any], dict[str, str]]]:
    def ceiling() -> Any:
        from bench.ceiling import app

        return app

    return {
        "ceiling": (ceiling, {}),
        "gateway": (lambda: _gateway_app(GATEWAY_CONFIG, log_file), {}),
        "plugins": (lambda: _gateway_app(PLUGINS_CONFIG, log_file), {"authorization": f"Bearer {API_KEY}"}),
    }


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    import uvloop

    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=["ceiling", "gateway", "plugins"], help="cProfile this app")
    parser.add_argument("--only", choices=["ceiling", "gateway", "plugins"], help="measure this app alone")
    parser.add_argument("--uvloop", action="store_true", help="on uvloop, as the servers run")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    stderr = sys.stderr
    logging.disable(logging.NOTSET)
    with tempfile.TemporaryFile("w+") as log_file:
        apps = _apps(log_file)
        names = [args.profile or args.only] if args.profile or args.only else list(apps)
        results = {}
        for name in names:
            factory, headers = apps[name]
            measured = _measure(factory(), headers, args.requests, args.rounds, bool(args.profile))
            with asyncio.Runner(loop_factory=_loop_factory(args.uvloop)) as runner:
                samples = runner.run(measured)
            results[name] = statistics.median(samples)
            rounds = ", ".join(f"{sample:.1f}" for sample in samples)
            print(
                f"{name:8} {results[name]:6.1f} us/request, best {min(samples):.1f} (rounds: {rounds})",
                file=stderr,
            )
        sys.stderr = stderr
        log_file.seek(0)
        lines = log_file.read().count("\n")
    if "ceiling" in results:
        for name in ("gateway", "plugins"):
            print(f"{name}: {results[name] - results['ceiling']:.1f} us over the ceiling", file=stderr)
    print(f"({lines} log lines written)", file=stderr)


if __name__ == "__main__":
    main()
