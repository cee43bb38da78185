"""Start servers under test as subprocesses on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process_server(
    command: Sequence[str], port: int, ready_path: str, timeout_s: float = 300
) -> Iterator[str]:
    """Run `command` until `GET ready_path` answers 200; yields the base URL."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[:4]} exited: {log.read()[-2000:].decode(errors='replace')}")
            try:
                if httpx.get(base_url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not become ready")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextmanager
def gateway_server(config_toml: str) -> Iterator[str]:
    """`gateway serve` with the given config text."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.toml"
        path.write_text(config_toml)
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port)]
        with process_server(command, port, "/health") as base_url:
            yield base_url


@contextmanager
def mlx_lm_server(model_dir: Path, *extra: str) -> Iterator[str]:
    """The peer: `mlx_lm.server` on the same model, with the same fast-BLAS preload as ours."""
    port = free_port()
    preload = "from backends.mlx.blas import use_fast_blas; use_fast_blas(); import runpy, sys; "
    run = (
        "sys.argv = ['mlx_lm.server'] + sys.argv[1:]; runpy.run_module('mlx_lm.server', run_name='__main__')"
    )
    command = [
        sys.executable, "-c", preload + run,
        "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port), *extra,
    ]  # fmt: skip
    with process_server(command, port, "/v1/models") as base_url:
        yield base_url
