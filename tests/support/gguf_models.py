"""Offline GGUF test files: a Hugging Face-style test checkpoint written as llama.cpp would.

`write_gguf` turns a directory from `tests.support.mlx_models` into a GGUF file
with the `gguf` package: the hyper-parameters and vocabulary as `llama.*` and
`tokenizer.ggml.*` metadata, q/k rows permuted the way llama.cpp's converter
does, weights stored as F32 or quantized to a GGML type. Loading it back must
give the checkpoint's own model, which is what the GGUF tests compare against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(name: str) -> str:
    """mlx-lm's parameter name -> llama.cpp's."""
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if name in top:
        return top[name]
    if name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = name.split(".", 3)
    module, _, kind = rest.rpartition(".")
    return f"blk.{layer}.{_NAMES[module]}.{kind}"


def permute(rows: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k layout (what the loader must undo)."""
    count = rows.shape[0]
    return rows.reshape(heads, 2, count // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def build_tiny_model(directory: Path, model_type: str, **extra: Any) -> Path:
    """A 2-layer random checkpoint of an mlx-lm family (qwen2: q/k/v biases; qwen3:
    q/k norms; llama with `rope_scaling`), with the test tokenizer, as `build_tiny_llama`."""
    from tests.support.mlx_models import ModelShape, _config, _eos_id, _write_random_weights, build_tokenizer

    build_tokenizer(directory, vocab_size=512)
    shape = ModelShape(model_type, 64, 2, 128, 4, 2, 512, tie_word_embeddings=False)
    extra = {"rope_theta": 1000000.0, **({"head_dim": 16} if model_type == "qwen3" else {}), **extra}
    config = _config(shape, 512, _eos_id(directory), **extra)
    (directory / "config.json").write_text(json.dumps(config))
    _write_random_weights(directory, config, seed=1, logit_scale=6.0)
    return directory


def write_gguf(
    checkpoint: Path,
    target: Path,
    *,
    quantization: str | None = None,
    architecture: str = "llama",
    chat_template: str | None = None,
) -> Path:
    """`checkpoint` (config.json, model.safetensors, tokenizer.json) as a GGUF file.

    `quantization` names a GGML type ("Q8_0", "Q4_0", "Q5_0", ...) for the 2-D
    weights; norms stay F32, as in llama.cpp's files.
    """
    import gguf
    import mlx.core as mx
    from gguf.quants import quantize

    config = json.loads((checkpoint / "config.json").read_text())
    weights = {
        name: np.array(value.astype(mx.float32))
        for name, value in mx.load(str(checkpoint / "model.safetensors")).items()
    }
    writer = gguf.GGUFWriter(str(target), architecture)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_vocab_size(config["vocab_size"])
    if "head_dim" in config:
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    _add_vocabulary(writer, checkpoint, chat_template)
    kind = getattr(gguf.GGMLQuantizationType, quantization) if quantization else None
    for name, value in weights.items():
        if architecture in ("llama", "mistral") and name.endswith(("q_proj.weight", "k_proj.weight")):
            key = "num_attention_heads" if "q_proj" in name else "num_key_value_heads"
            value = permute(value, config[key])
        if kind is not None and value.ndim == 2:
            writer.add_tensor(gguf_name(name), quantize(value, kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name(name), value)
    if config.get("rope_scaling", {}).get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_factors(config))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def llama3_rope_factors(config: dict[str, Any]) -> np.ndarray:
    """The per-dimension wavelength factors llama.cpp's converter stores as rope_freqs
    for a Llama 3.1-style `rope_scaling` (high frequencies kept, low ones stretched by
    `factor`, a smooth ramp between)."""
    scaling = config["rope_scaling"]
    dims = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    context = scaling["original_max_position_embeddings"]
    factors = []
    for i in range(0, dims, 2):
        wavelength = 2 * np.pi * config["rope_theta"] ** (i / dims)
        if wavelength < context / high:
            factors.append(1.0)
        elif wavelength > context / low:
            factors.append(factor)
        else:
            smooth = (context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _add_vocabulary(writer: Any, checkpoint: Path, chat_template: str | None) -> None:
    """The byte-level BPE of tokenizer.json as `tokenizer.ggml.*` (gpt2 model)."""
    data = json.loads((checkpoint / "tokenizer.json").read_text())
    settings = json.loads((checkpoint / "tokenizer_config.json").read_text())
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    kinds = {index: 1 for index in vocab.values()}
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
        kinds[added["id"]] = 3 if added["special"] else 4
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [" ".join(merge) if isinstance(merge, list) else merge for merge in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([kinds[vocab[token]] for token in tokens])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(vocab[settings["eos_token"]])
    writer.add_pad_token_id(vocab[settings["pad_token"]])
    writer.add_add_bos_token(False)
    template = chat_template if chat_template is not None else settings.get("chat_template")
    if template is not None:
        writer.add_chat_template(template)
