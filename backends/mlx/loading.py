"""Loading and unloading an MLX model: the engine thread's side.

`start_engine` preloads the fast BLAS before anything imports mlx, then starts
the engine thread; `load_model` runs on that thread; `stop_engine` detaches the
model and gives its memory back. `weights_bytes` is the budget estimate.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.backend import ModelSpec
from gateway.errors import BackendUnavailable

if TYPE_CHECKING:
    from backends.mlx.backend import MLXOptions
    from backends.mlx.engine import Engine

log = structlog.get_logger("backends.mlx")


def weights_bytes(path: str, dtype: str | None) -> int:
    directory = Path(path)
    if not directory.is_dir():
        return 0
    size = sum(file.stat().st_size for file in directory.glob("*.safetensors"))
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return size
    stored = config.get("torch_dtype")
    width = {"float32": 4, "bfloat16": 2, "float16": 2}
    if dtype in width and stored in width and "quantization" not in config:
        size = size * width[dtype] // width[stored]
    return size


def start_engine(model_id: str, options: MLXOptions, prefix_cache_bytes: int) -> Engine:
    """Preload the fast BLAS, then import mlx (through the engine module) and start it."""
    from backends.mlx.blas import use_fast_blas

    result = use_fast_blas(options.fast_blas)
    log.info("mlx blas", model=model_id, status=result.status, detail=result.message)
    from backends.mlx.engine import Engine

    engine = Engine(
        max_batch_size=options.max_batch_size,
        prefill_step_size=options.prefill_step_size,
        prefix_cache_bytes=prefix_cache_bytes,
        name=model_id,
    )
    engine.start()
    return engine


def load_model(engine: Engine, spec: ModelSpec, options: MLXOptions) -> tuple[Any, int | None]:
    """Runs on the engine thread: load, cast, warm up; returns the tokenizer and the
    context length the model was made for (the default `max_context`)."""
    import mlx.core as mx
    from mlx_lm import load

    started = time.perf_counter()
    path = spec.config.path or ""
    if path.startswith(("/", ".", "~")) and not Path(path).expanduser().is_dir():
        raise BackendUnavailable(f"model '{spec.id}': no model directory at '{path}'")
    model, tokenizer = load(str(Path(path).expanduser()) if path.startswith("~") else path)
    if options.dtype is not None:
        model.set_dtype(getattr(mx, options.dtype))
    engine.attach(model)
    log.info(
        "mlx model loaded",
        model=spec.id,
        path=spec.config.path,
        seconds=round(time.perf_counter() - started, 2),
        vocab=engine.vocab_size,
        batched=engine.batched,
        prefix_cache=engine.prefix.mode if engine.prefix is not None else None,
    )
    trained_context = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    return tokenizer, trained_context if isinstance(trained_context, int) else None


def stop_engine(engine: Engine) -> None:
    import mlx.core as mx

    if engine.running:
        engine.call(engine.detach).result(timeout=60)
    engine.stop()
    mx.clear_cache()
    gc.collect()
