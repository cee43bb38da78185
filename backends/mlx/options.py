"""The MLX backend's per-model options (`[models.x.options]`), checked at start-up."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway import ConfigError


class MLXOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[models.<id>.options]` of an mlx model.

    `dtype` casts the weights after loading (on Linux CPU float32 is fastest);
    `max_context` bounds prompt + max_tokens (a request over it gets a 400; the
    default is the model's `max_position_embeddings`);
    `fast_blas` preloads the system OpenBLAS for MLX's CPU matmuls;
    `max_batch_size` bounds the rows decoded together; `prefill_step_size` is the
    prompt chunk run between two decode steps of the other rows;
    `prefix_cache_bytes` caps the KV states kept for reuse by later prompts with
    the same prefix (bytes or "512MiB"; 0 turns the prefix cache off);
    `embedding_pooling` is how /v1/embeddings pools the final hidden states per
    input (`mean` over tokens, or the `last` token's); `embedding_dimensions`
    says the model's embeddings may be truncated (Matryoshka-trained), so a
    request's `dimensions` is honoured rather than refused;
    `kv_bits` (8 or 4) stores the KV cache quantized, for the decode batch and the
    prefix cache alike, with scales per `kv_group_size` channels (which must divide
    the model's head dimension: checked at load; default 64);
    `speculative = "prompt_lookup"` drafts up to `num_draft_tokens` tokens per
    step from the row's own prompt and output (n-gram lookup) and verifies them
    in the batch's forward pass (`speculative.py`); a request's `prediction`
    drafts from the client's text on any model whose cache can roll back;
    `draft_model = "<path>"` (any path `path` takes) drafts with a small second model
    sharing the tokenizer, decoding greedily, loaded as stored (`draft_model.py`);
    it implies speculation and excludes `speculative`.
    """

    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = {}
    max_context: Annotated[int, Meta(ge=1)] | None = None
    fast_blas: bool = True
    max_batch_size: Annotated[int, Meta(ge=1, le=1024)] = 16
    prefill_step_size: Annotated[int, Meta(ge=16)] = 512
    prefix_cache_bytes: Annotated[int, Meta(ge=0)] | str = 512 * 1024**2
    embedding_pooling: Literal["mean", "last"] = "mean"
    embedding_dimensions: bool = False
    kv_bits: Literal[4, 8] | None = None
    kv_group_size: Literal[32, 64, 128] | None = None  # 64 when kv_bits is set
    speculative: Literal["prompt_lookup"] | None = None
    draft_model: str | None = None
    num_draft_tokens: Annotated[int, Meta(ge=1, le=32)] = 4


def check_options(model_id: str, options: MLXOptions) -> None:
    """The rules between options that their types alone cannot say."""
    if options.kv_group_size is not None and options.kv_bits is None:
        raise ConfigError(
            f'models."{model_id}".options.kv_group_size: only applies to a quantized KV cache; set kv_bits (8 or 4)'
        )
    if options.draft_model is not None and options.speculative is not None:
        raise ConfigError(
            f'models."{model_id}".options: draft_model and speculative = "{options.speculative}" '
            "are two draft sources; set one"
        )
