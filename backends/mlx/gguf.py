"""A GGUF file as an mlx-lm model: hyper-parameters, renamed weights, quantization.

`mx.load` reads GGUF natively and keeps Q4_0/Q4_1/Q8_0 as MLX affine-quantized
triples (weight/scales/biases, group size 32); files holding other types (the
K-quants, Q5_x, ...) are read with the `gguf` package and dequantized. llama.cpp
stores q/k rows permuted for its RoPE layout in llama-family files; the
permutation is undone here so mlx-lm's attention sees Hugging Face's order.
Nothing here runs on import: mlx must be imported after the BLAS preload.
"""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.mlx.gguf_tokenizer import build_tokenizer

if TYPE_CHECKING:
    import mlx.core as mx
    from mlx import nn

# GGML type ids MLX reads as stored: F32, F16, Q4_0, Q4_1, Q8_0, BF16.
NATIVE_TYPES = frozenset({0, 1, 2, 3, 8, 30})
GROUP_SIZE = 32  # every GGUF block type MLX reads natively quantizes rows in blocks of 32
MAGIC = b"GGUF"

# GGUF architecture -> (mlx_lm model module, q/k rows permuted by llama.cpp's converter).
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}

_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|scales|biases|bias)")
_TOP = re.compile(r"(\w+)\.(weight|scales|biases|bias)")


class GGUFError(Exception):
    """The file is not a GGUF model this backend can serve; retrying will not help."""


def is_gguf(path: str | Path) -> bool:
    """A `.gguf` name or a file starting with GGUF's magic (Ollama's blobs have no suffix)."""
    file = Path(path)
    if file.suffix.lower() == ".gguf":
        return True
    try:
        with file.open("rb") as handle:
            return file.is_file() and handle.read(4) == MAGIC
    except OSError:
        return False


def load_gguf(path: Path, dtype: str | None) -> tuple[nn.Module, Any]:
    """The mlx-lm model and tokenizer for a GGUF file.

    `dtype` None keeps natively quantized weights quantized; a dtype dequantizes
    everything to it (float32 takes the fast OpenBLAS path on Linux CPU).
    """
    import mlx.core as mx

    tensors, metadata, native = read_gguf(path)
    architecture = str(metadata.get("general.architecture", ""))
    if architecture not in ARCHITECTURES:
        served = ", ".join(sorted(ARCHITECTURES))
        raise GGUFError(f"GGUF architecture '{architecture}' is not supported (supported: {served})")
    module_name, permuted = ARCHITECTURES[architecture]
    args = model_args(metadata, architecture, tied="output.weight" not in tensors)
    rope_factors = tensors.pop("rope_freqs.weight", None)  # Llama 3.1-style long-context scaling
    weights = rename(tensors, args if permuted else None)
    if dtype is None and not native:
        dtype = "float16"  # dequantized by the gguf package: half the memory of float32
    target = getattr(mx, dtype) if dtype is not None else None
    bits = _quantized_bits(weights)
    if target is not None:
        weights, bits = _dequantized(weights, bits, target), {}
    model = _build(module_name, args, bits)
    model.load_weights(list(weights.items()), strict=True)
    if rope_factors is not None:
        _scale_rope(model, args, rope_factors)
    mx.eval(model.parameters())
    return model, build_tokenizer(metadata)


def read_gguf(path: Path) -> tuple[dict[str, mx.array], dict[str, Any], bool]:
    """Tensors (by GGUF name), metadata as plain Python values, and whether MLX read
    the tensors as stored (False: the `gguf` package dequantized them)."""
    import mlx.core as mx

    try:
        tensors, metadata = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError):
        return (*_read_with_gguf_package(path), False)
    return tensors, {key: _plain(value) for key, value in metadata.items()}, True


def _plain(value: Any) -> Any:
    import mlx.core as mx

    if isinstance(value, mx.array):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


def _read_with_gguf_package(path: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Every tensor dequantized to float32 by the `gguf` package (types MLX cannot hold)."""
    import mlx.core as mx
    import numpy as np

    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(path)
    except (OSError, ValueError, struct.error) as error:
        raise GGUFError(f"'{path}' is not a readable GGUF file: {error}") from None
    metadata = {
        name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")
    }
    tensors: dict[str, mx.array] = {}
    for tensor in reader.tensors:
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise GGUFError(
                f"GGUF tensor '{tensor.name}' has type {tensor.tensor_type.name}, which cannot be read"
            ) from None
        shape = tuple(int(n) for n in reversed(tensor.shape))
        tensors[tensor.name] = mx.array(np.asarray(values, dtype=np.float32).reshape(shape))
    return tensors, metadata


def model_args(metadata: dict[str, Any], architecture: str, *, tied: bool) -> dict[str, Any]:
    """mlx-lm's `ModelArgs` fields from the `<architecture>.*` hyper-parameters."""

    def get(key: str, default: Any = None) -> Any:
        return metadata.get(f"{architecture}.{key}", default)

    try:
        heads = int(get("attention.head_count"))
        args: dict[str, Any] = {
            "model_type": ARCHITECTURES[architecture][0],
            "hidden_size": int(get("embedding_length")),
            "num_hidden_layers": int(get("block_count")),
            "intermediate_size": int(get("feed_forward_length")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(get("attention.head_count_kv", heads)),
            "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            "vocab_size": int(get("vocab_size", len(metadata.get("tokenizer.ggml.tokens", [])))),
            "rope_theta": float(get("rope.freq_base", 10000.0)),
            "max_position_embeddings": int(get("context_length", 2048)),
            "tie_word_embeddings": tied,
        }
    except TypeError:
        raise GGUFError(f"GGUF metadata lacks the {architecture}.* hyper-parameters") from None
    args["head_dim"] = int(get("attention.key_length", args["hidden_size"] // heads))
    if get("rope.scaling.type") == "linear":
        args["rope_scaling"] = {"type": "linear", "factor": float(get("rope.scaling.factor", 1.0))}
    return args


def rename(tensors: dict[str, mx.array], permute_for: dict[str, Any] | None) -> dict[str, mx.array]:
    """GGUF names -> mlx-lm names; q/k rows (and their scales/biases) un-permuted for llama."""
    renamed: dict[str, mx.array] = {}
    for name, value in tensors.items():
        block = _BLOCK.fullmatch(name)
        top = _TOP.fullmatch(name)
        if block and block.group(2) in _BLOCK_NAMES:
            layer, part, kind = block.groups()
            target = f"model.layers.{layer}.{_BLOCK_NAMES[part]}.{kind}"
            if permute_for is not None and part in ("attn_q", "attn_k"):
                key = "num_attention_heads" if part == "attn_q" else "num_key_value_heads"
                value = unpermute(value, permute_for[key])
        elif top and top.group(1) in _TOP_NAMES:
            target = f"{_TOP_NAMES[top.group(1)]}.{top.group(2)}"
        else:
            raise GGUFError(f"GGUF tensor '{name}' has no place in the model")
        renamed[target] = value
    return renamed


def unpermute(rows: mx.array, heads: int) -> mx.array:
    """Undo llama.cpp's per-head interleave of q/k rows (rows stay whole, so packed
    quantized rows and their scales/biases move the same way)."""
    count = rows.shape[0]
    rest = rows.shape[1:]
    return rows.reshape(heads, count // heads // 2, 2, *rest).swapaxes(1, 2).reshape(count, *rest)


def _quantized_bits(weights: dict[str, mx.array]) -> dict[str, int]:
    """Module path -> bits for each natively quantized weight (packed uint32 columns)."""
    bits = {}
    for name, scales in weights.items():
        if name.endswith(".scales"):
            module = name.removesuffix(".scales")
            packed = weights[f"{module}.weight"]
            bits[module] = packed.shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
    return bits


def _dequantized(weights: dict[str, mx.array], bits: dict[str, int], dtype: mx.Dtype) -> dict[str, mx.array]:
    import mlx.core as mx

    result = {}
    for name, value in weights.items():
        module, _, kind = name.rpartition(".")
        if module in bits:
            if kind != "weight":
                continue
            value = mx.dequantize(
                value,
                weights[f"{module}.scales"],
                weights[f"{module}.biases"],
                group_size=GROUP_SIZE,
                bits=bits[module],
            )
        result[name] = value.astype(dtype)
    return result


def _build(module_name: str, args: dict[str, Any], bits: dict[str, int]) -> nn.Module:
    import importlib

    from mlx import nn

    module = importlib.import_module(f"mlx_lm.models.{module_name}")
    model = module.Model(module.ModelArgs.from_dict(args))
    if bits:
        nn.quantize(
            model,
            class_predicate=lambda path, _: (
                {"group_size": GROUP_SIZE, "bits": bits[path], "mode": "affine"} if path in bits else False
            ),
        )
    return model


def _scale_rope(model: nn.Module, args: dict[str, Any], factors: mx.array) -> None:
    """Stretch each RoPE wavelength by llama.cpp's per-dimension factor (what mlx-lm's
    llama3 RoPE computes from the config, given here as a tensor)."""
    import mlx.core as mx
    from mlx import nn

    dims = args["head_dim"]
    periods = args["rope_theta"] ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims) * factors.astype(
        mx.float32
    )

    class FactorRoPE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._freqs = periods  # underscored: not a parameter

        def __call__(self, x: mx.array, offset: int = 0) -> mx.array:
            return mx.fast.rope(
                x, dims, traditional=False, base=None, scale=1.0, offset=offset, freqs=self._freqs
            )

    for layer in model.layers:
        layer.self_attn.rope = FactorRoPE()


# --- the budget estimate, without importing mlx ---------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def tensor_summary(path: Path) -> tuple[int, set[int]]:
    """How many weights the file holds and their GGML type ids, from its header
    (tensor infos follow the metadata; no mlx, no reading of the weights)."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != MAGIC:
            raise GGUFError(f"'{path}' is not a GGUF file")
        return _scan_header(data)  # only the header's pages (a few MB) are read


def _scan_header(data: mmap.mmap) -> tuple[int, set[int]]:
    """Walk the key-value pairs (skipping their values) to the tensor infos; sum and collect."""
    offset = 8

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def skip_value(kind: int) -> None:
        nonlocal offset
        if kind == _STRING:
            length = take("<Q")
            offset += length
        elif kind == _ARRAY:
            item, count = take("<I"), take("<Q")
            if item in _SCALAR_SIZES:
                offset += _SCALAR_SIZES[item] * count
            else:
                for _ in range(count):
                    skip_value(item)
        else:
            offset += _SCALAR_SIZES[kind]

    tensor_count, kv_count = take("<Q"), take("<Q")
    for _ in range(kv_count):
        skip_value(_STRING)  # the key
        skip_value(take("<I"))
    total, types = 0, set()
    for _ in range(tensor_count):
        skip_value(_STRING)  # the name
        elements = 1
        for _ in range(take("<I")):
            elements *= take("<Q")
        types.add(take("<I"))
        offset += 8  # the data offset
        total += elements
    return total, types


def estimate_bytes(path: Path, dtype: str | None) -> int:
    """The loaded size: the file itself when MLX keeps it as stored, else weights x width."""
    size = path.stat().st_size
    try:
        elements, types = tensor_summary(path)
    except (GGUFError, struct.error, KeyError, ValueError):  # ValueError: an empty file for mmap
        return size
    if dtype is None and types <= NATIVE_TYPES:
        return size
    return elements * (4 if dtype == "float32" else 2)
