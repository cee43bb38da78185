"""Several MLX models from one config: lazy single-flight loads, budget, pins, TTL, reload."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import structlog

pytest.importorskip("mlx.core")

from backends.mlx import plugin as mlx_plugin
from gateway import create_app, load_config, parse_config
from gateway.plugins import new_plugin_manager
from tests.support.apps import mlx_app
from tests.support.server import running_server

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory, tiny_llama_path: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hosted")
    paths = {}
    for name in ("alpha", "beta", "gamma"):
        paths[name] = root / name
        shutil.copytree(tiny_llama_path, paths[name])
    return paths


def weights_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.glob("*.safetensors"))


def statuses(base_url: str) -> dict[str, str]:
    return {card["id"]: card["status"] for card in httpx.get(f"{base_url}/v1/models").json()["data"]}


def ask(base_url: str, model: str) -> int:
    body = {"model": model, "messages": USER, "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60).status_code


def estimate(models: dict[str, Any], name: str) -> int:
    """What the backend tells the registry it will need (weights, plus its caches' cap)."""
    from backends.mlx.backend import MLXBackend
    from gateway.backend import ModelSpec

    config = parse_config({"models": models}).models[name]
    return int(MLXBackend(ModelSpec(name, config)).memory_estimate())


def test_lazy_single_flight_lru_under_budget_pins_aliases(three_models: dict[str, Path]) -> None:
    models = {
        "alpha": {"backend": "mlx", "path": str(three_models["alpha"]), "aliases": ["a"]},
        "beta": {"backend": "mlx", "path": str(three_models["beta"]), "pin": True},
        "gamma": {"backend": "mlx", "path": str(three_models["gamma"])},
    }
    size = estimate(models, "alpha")
    assert size >= weights_bytes(three_models["alpha"])
    with running_server(mlx_app(models, memory_budget=int(size * 2.5))) as base_url:
        assert set(statuses(base_url).values()) == {"unloaded"}

        async def first_requests() -> list[int]:
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                body = {"model": "a", "messages": USER, "max_tokens": 3, "temperature": 0}
                responses = await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=body) for _ in range(10))
                )
            return [response.status_code for response in responses]

        with structlog.testing.capture_logs() as logs:
            assert asyncio.run(first_requests()) == [200] * 10
        assert [event["model"] for event in logs if event["event"] == "model loading"] == ["alpha"]

        assert ask(base_url, "beta") == 200
        assert statuses(base_url) == {"alpha": "loaded", "beta": "loaded", "gamma": "unloaded"}
        assert ask(base_url, "gamma") == 200  # evicts alpha, the least recently used unpinned model
        assert statuses(base_url) == {"alpha": "unloaded", "beta": "loaded", "gamma": "loaded"}
        assert ask(base_url, "a") == 200  # evicts gamma; beta is pinned
        assert statuses(base_url) == {"alpha": "loaded", "beta": "loaded", "gamma": "unloaded"}
        assert ask(base_url, "delta") == 404


def test_ttl_unloads_an_idle_model(three_models: dict[str, Path]) -> None:
    models = {
        "alpha": {"backend": "mlx", "path": str(three_models["alpha"]), "ttl_s": 0.5},
        "beta": {"backend": "mlx", "path": str(three_models["beta"])},
    }
    with running_server(mlx_app(models)) as base_url:
        assert ask(base_url, "alpha") == 200 and ask(base_url, "beta") == 200
        deadline = time.monotonic() + 10
        while statuses(base_url)["alpha"] != "unloaded" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert statuses(base_url) == {"alpha": "unloaded", "beta": "loaded"}


def test_hot_reload_while_an_mlx_stream_is_in_flight(three_models: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    alpha, beta, gamma = (str(three_models[name]) for name in ("alpha", "beta", "gamma"))
    path.write_text(
        f'[models.alpha]\nbackend = "mlx"\npath = "{alpha}"\n[models.beta]\nbackend = "mlx"\npath = "{beta}"\n'
    )
    manager = new_plugin_manager()
    manager.register(mlx_plugin, name="mlx")
    app = create_app(load_config(path), manager, config_path=path)
    with running_server(app) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="alpha", messages=USER, stream=True, max_tokens=200, temperature=0
        )
        chunks = iter(stream)
        first = next(chunks)
        path.write_text(
            f'[models.beta]\nbackend = "mlx"\npath = "{beta}"\n[models.gamma]\nbackend = "mlx"\npath = "{gamma}"\n'
        )
        assert httpx.post(f"{base_url}/admin/reload").json() == {"models": ["beta", "gamma"]}
        rest = [chunk for chunk in chunks if chunk.choices]
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].choices[0].finish_reason == "length"  # the removed model finished its stream
        assert ask(base_url, "gamma") == 200
        assert ask(base_url, "alpha") == 404
        assert set(statuses(base_url)) == {"beta", "gamma"}


MEMORY_SCRIPT = """
import asyncio, gc, json, os, sys
from backends.mlx.blas import use_fast_blas
use_fast_blas()
from gateway import parse_config, ChatCompletionRequest, Message, GenerationOptions
from gateway.plugin_set import collect_backends
from gateway.plugins import new_plugin_manager
from gateway.registry import BackendRegistry
from backends.mlx import plugin

def rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")

async def settled_rss() -> int:
    # RSS once it stops falling (up to 2 s): freed pages can take a moment to leave
    # (an engine thread ending, the allocator trimming); a reading in between is noise.
    before = rss()
    for _ in range(40):
        await asyncio.sleep(0.05)
        now = rss()
        if before - now < 2**20:
            return now
        before = now
    return before

async def main() -> None:
    manager = new_plugin_manager()
    manager.register(plugin, name="mlx")
    config = parse_config({"models": {"m": {"backend": "mlx", "path": sys.argv[1]}}})
    registry = BackendRegistry(config, collect_backends(manager))
    entry = registry.resolve("m")
    request = ChatCompletionRequest(model="m", messages=[Message(role="user", content="hi")], max_tokens=4)
    loaded, unloaded = [], []
    for _ in range(6):
        lease = await registry.acquire(entry)
        async for _event in lease.backend.generate(request, GenerationOptions()):
            pass
        lease.release()
        del lease, _event
        loaded.append(rss())
        await registry.unload(entry)
        gc.collect()
        unloaded.append(await settled_rss())
    print(json.dumps({"loaded": loaded, "unloaded": unloaded}), flush=True)

asyncio.run(main())
# MLX's C++ teardown at interpreter exit sometimes aborts this bare script ("terminate
# called without an active exception", about 1 run in 8 here; `gateway serve` exits
# cleanly). The figures are out: leave without running it.
os._exit(0)
"""


def test_unloading_returns_memory(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.support.mlx_models import ModelShape, build_realistic_model

    shape = ModelShape("llama", 1024, 4, 4096, 8, 2, 512, tie_word_embeddings=False)
    path = build_realistic_model(tmp_path_factory.mktemp("sized") / "m", shape=shape)
    size = weights_bytes(path)
    assert size > 200 * 2**20
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    loaded, unloaded = figures["loaded"], figures["unloaded"]
    baseline = unloaded[0]  # after one full cycle: libraries and allocator warmed up
    assert min(loaded) - baseline > size * 0.7, figures  # the measurement sees the model
    for after in unloaded[1:]:
        assert after - baseline < size * 0.25, figures  # and each unload gives it back


def test_load_failures_are_clear_and_the_next_request_retries(
    three_models: dict[str, Path], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(three_models["alpha"], corrupt)
    weights = corrupt / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 3])
    models = {
        "missing": {"backend": "mlx", "path": str(tmp_path / "nowhere")},
        "corrupt": {"backend": "mlx", "path": str(corrupt)},
        "alpha": {"backend": "mlx", "path": str(three_models["alpha"])},
    }
    with running_server(mlx_app(models)) as base_url:
        body = {"messages": USER, "max_tokens": 2}
        missing = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "missing", **body}, timeout=60)
        assert missing.status_code == 503
        assert "no model directory" in missing.json()["error"]["message"]
        assert missing.json()["error"]["code"] == "model_load_failed"
        assert missing.headers["x-should-retry"] == "false"  # it fails the same way on a retry
        broken = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "corrupt", **body}, timeout=60)
        assert broken.status_code == 503 and broken.json()["error"]["code"] == "model_unavailable"
        assert "x-should-retry" not in broken.headers  # it may be fixed in place
        assert ask(base_url, "alpha") == 200  # the others keep serving
        assert statuses(base_url)["corrupt"] == "failed"
        weights.write_bytes(good)
        assert ask(base_url, "corrupt") == 200  # the next request retries the load


def test_queue_overflow_is_429_with_retry_after(three_models: dict[str, Path]) -> None:
    models = {
        "alpha": {"backend": "mlx", "path": str(three_models["alpha"]), "max_concurrency": 1, "max_queue": 1}
    }
    with running_server(mlx_app(models)) as base_url:
        assert ask(base_url, "alpha") == 200  # loaded

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
                body = {"model": "alpha", "messages": USER, "max_tokens": 300, "temperature": 0}
                return await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=body) for _ in range(4))
                )

        responses = asyncio.run(burst())
        assert sorted(response.status_code for response in responses) == [200, 200, 429, 429]
        refused = next(response for response in responses if response.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
