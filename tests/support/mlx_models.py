"""Offline MLX test models, loadable through the real `mlx_lm.load(path)`.

Every builder writes a Hugging Face-style directory (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json with a ChatML chat
template) from code alone: no hub, no network. Three kinds:

* `build_tiny_llama`: a small random llama; output is random-ish text, but
  deterministic under greedy decoding and visibly moved by sampling fields.
* `build_scripted_model`: a model that says an exact script (see
  `tests.support.mlx_scripted` for the design, `SCENARIOS` for the catalogue).
* `build_realistic_model`: a Qwen2-0.5B-shaped float32 model with a 32k BPE
  vocabulary, for benchmarks; built once into a cache directory.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.mlx_scripted import (
    CALL_LONDON,
    CALL_PARIS,
    RUNNER_UP,
    SCENARIOS,
    Script,
    ScriptedLogprobs,
    build_scripted_model,
    expected_logprobs,
    script_info,
)
from tests.support.mlx_tokenizer import CHAT_TEMPLATE, EOS, MARKUP_TOKENS, build_tokenizer, byte_level

__all__ = [
    "CALL_LONDON",
    "CALL_PARIS",
    "CHAT_TEMPLATE",
    "EOS",
    "MARKUP_TOKENS",
    "QWEN2_0_5B",
    "RUNNER_UP",
    "SCENARIOS",
    "TINY_LLAMA_HEAD64",
    "ModelShape",
    "Script",
    "ScriptedLogprobs",
    "build_realistic_model",
    "build_scripted_model",
    "build_tiny_llama",
    "build_tokenizer",
    "byte_level",
    "expected_logprobs",
    "script_info",
]


@dataclass(frozen=True)
class ModelShape:
    """Transformer dimensions; the vocabulary size is the tokenizer's."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = True


QWEN2_0_5B = ModelShape("qwen2", 896, 24, 4864, 14, 2, 32000)
TINY_LLAMA = ModelShape("llama", 64, 2, 128, 4, 2, 512, tie_word_embeddings=False)
# Head dim 64 (two query heads per KV head): what quantized KV caches need to group channels.
TINY_LLAMA_HEAD64 = ModelShape("llama", 128, 2, 256, 2, 1, 512, tie_word_embeddings=False)
# Random lm_head weights give nearly flat logits (std ~0.6); scaling them makes
# the distribution peaked enough that temperature, top_k and top_p visibly matter.
_TINY_LOGIT_SCALE = 6.0


def _write_random_weights(
    directory: Path,
    config: dict[str, Any],
    seed: int,
    *,
    logit_scale: float = 1.0,
    silent_eos: int | None = None,
) -> None:
    """Instantiate the mlx-lm model class for `config` with seeded init and save it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    if logit_scale != 1.0:
        weights["lm_head.weight"] = weights["lm_head.weight"] * logit_scale
    if silent_eos is not None:
        # A zero EOS logit sits mid-distribution: greedy decoding runs to max_tokens.
        weights["lm_head.weight"][silent_eos] = 0.0
    weights = {name: value.astype(mx.float32) for name, value in weights.items()}
    mx.save_safetensors(str(directory / "model.safetensors"), weights, metadata={"format": "mlx"})
    del model, weights


def _config(shape: ModelShape, vocab_size: int, eos_id: int, **extra: Any) -> dict[str, Any]:
    config = {k: v for k, v in asdict(shape).items() if k != "vocab_size"}
    config.update(
        vocab_size=vocab_size,
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        eos_token_id=eos_id,
        torch_dtype="float32",
        **extra,
    )
    return config


def _eos_id(directory: Path) -> int:
    from tokenizers import Tokenizer

    found = Tokenizer.from_file(str(directory / "tokenizer.json")).token_to_id(EOS)
    assert found is not None
    return found


def build_tiny_llama(
    directory: str | Path, *, seed: int = 0, vocab_size: int = 512, shape: ModelShape | None = None
) -> Path:
    """A 2-layer, 64-wide random llama with the test tokenizer (float32); `shape`
    changes its dimensions (e.g. `TINY_LLAMA_HEAD64`, whose head dim quantized KV caches can group).

    Its EOS logit is pinned to zero, so greedy output runs to the token limit;
    sampling can still end it now and then.
    """
    directory = Path(directory)
    build_tokenizer(directory, vocab_size=vocab_size)
    eos = _eos_id(directory)
    config = _config(shape or TINY_LLAMA, vocab_size, eos, architectures=["LlamaForCausalLM"])
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    _write_random_weights(directory, config, seed, logit_scale=_TINY_LOGIT_SCALE, silent_eos=eos)
    return directory


def build_realistic_model(directory: str | Path, *, seed: int = 0, shape: ModelShape = QWEN2_0_5B) -> Path:
    """A Qwen2-0.5B-shaped float32 random model for benchmarks (about 1.5 GB on disk).

    The 32k vocabulary is a real BPE: the generated corpus adds a Zipf-weighted
    made-up lexicon so training reaches the full merge count without padding.
    Skips the build when `directory` already holds one made with the same seed
    and shape (`build.json` is written last, so a half-built directory is redone).
    """
    directory = Path(directory)
    record = {"seed": seed, "shape": asdict(shape)}
    marker = directory / "build.json"
    if marker.exists() and json.loads(marker.read_text()) == record:
        return directory
    marker.unlink(missing_ok=True)
    build_tokenizer(directory, vocab_size=shape.vocab_size)
    extra = {"rope_theta": 1000000.0, "architectures": ["Qwen2ForCausalLM"]}
    config = _config(shape, shape.vocab_size, _eos_id(directory), **extra)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    _write_random_weights(directory, config, seed)
    marker.write_text(json.dumps(record))
    return directory
