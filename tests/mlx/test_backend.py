"""MLXBackend outside HTTP: options, lifecycle, lazy imports, dtype, cancellation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backends.mlx.backend import MLXBackend
from gateway.backend import GenerationChunk, GenerationEnd, GenerationOptions, ModelSpec
from gateway.config import ConfigError, ModelConfig
from gateway.errors import BackendUnavailable, InvalidRequest
from gateway.protocol import ChatCompletionRequest, Message

pytest.importorskip("mlx.core")


def spec(path: Path | None, **options: Any) -> ModelSpec:
    return ModelSpec("m", ModelConfig(backend="mlx", path=str(path) if path else None, options=options))


def request(**fields: Any) -> ChatCompletionRequest:
    messages = [Message(role="user", content="Hi!")]
    return ChatCompletionRequest(model="m", messages=messages, enable_thinking=False, **fields)


async def collect(backend: MLXBackend, req: ChatCompletionRequest, **options: Any) -> list[Any]:
    return [event async for event in backend.generate(req, GenerationOptions(**options))]


def test_importing_the_backend_does_not_import_mlx() -> None:
    code = "import sys, backends.mlx.plugin; print(any(m.split('.')[0] in ('mlx', 'mlx_lm') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_options_are_checked_by_key(tiny_llama_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'models."m".options.dtype'):
        MLXBackend(spec(tiny_llama_path, dtype="float64"))
    with pytest.raises(ConfigError, match="unknown"):
        MLXBackend(spec(tiny_llama_path, batch=4))
    with pytest.raises(ConfigError, match="path"):
        MLXBackend(spec(None))


def test_memory_estimate_follows_the_weights_dtype_and_prefix_cache(tiny_llama_path: Path) -> None:
    size = sum(f.stat().st_size for f in tiny_llama_path.glob("*.safetensors"))
    assert MLXBackend(spec(tiny_llama_path, prefix_cache_bytes=0)).memory_estimate() == size
    assert (
        MLXBackend(spec(tiny_llama_path, dtype="bfloat16", prefix_cache_bytes=0)).memory_estimate()
        == size // 2
    )
    assert MLXBackend(spec(tiny_llama_path)).memory_estimate() == size + 512 * 1024**2  # the default cap
    assert MLXBackend(spec(tiny_llama_path, prefix_cache_bytes="1MiB")).memory_estimate() == size + 1024**2
    with pytest.raises(ConfigError, match="prefix_cache_bytes"):
        MLXBackend(spec(tiny_llama_path, prefix_cache_bytes="lots"))


def test_dtype_cast_generates_and_unload_stops_the_thread(scripted_model: Callable[[str], Path]) -> None:
    backend = MLXBackend(spec(scripted_model("plain"), dtype="float16", max_batch_size=2))

    async def go() -> None:
        with pytest.raises(BackendUnavailable):
            await collect(backend, request())
        await backend.load()
        engine = backend._engine
        import mlx.core as mx
        from mlx.utils import tree_flatten

        dtypes = engine.call(lambda: {v.dtype for _, v in tree_flatten(engine.model.parameters())}).result()
        assert dtypes == {mx.float16}
        events = await collect(backend, request(temperature=0))
        assert "".join(e.text for e in events if isinstance(e, GenerationChunk)) == "Hello there!"
        assert backend.stats()["max_batch_size"] == 2
        await backend.unload()
        assert not engine.running and backend.stats() == {}
        with pytest.raises(BackendUnavailable):
            await collect(backend, request())

    asyncio.run(go())


def test_closing_the_generator_cancels_the_job(scripted_model: Callable[[str], Path]) -> None:
    backend = MLXBackend(spec(scripted_model("endless")))

    async def go() -> None:
        await backend.load()
        events = backend.generate(request(max_tokens=20_000), GenerationOptions())
        async for event in events:
            if isinstance(event, GenerationChunk) and event.text:
                break
        await events.aclose()
        engine = backend._engine
        for _ in range(200):
            if engine.stats()["running_rows"] == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.stats()["running_rows"] == 0
        # a request still runs afterwards
        done = await collect(backend, request(max_tokens=3, temperature=0))
        assert isinstance(done[-1], GenerationEnd) and done[-1].usage.completion_tokens == 3
        await backend.unload()

    asyncio.run(go())


def test_validate_names_the_field(tiny_llama_path: Path) -> None:
    backend = MLXBackend(spec(tiny_llama_path, max_context=64))

    async def go() -> None:
        await backend.load()
        with pytest.raises(InvalidRequest) as caught:
            backend.validate(request(logit_bias={"512": 1.0}))
        assert caught.value.param == "logit_bias"
        backend.validate(request(logit_bias={"511": 1.0}))
        with pytest.raises(InvalidRequest) as caught:
            await collect(backend, request(max_tokens=60))
        assert caught.value.param == "max_tokens"
        await backend.unload()

    asyncio.run(go())
