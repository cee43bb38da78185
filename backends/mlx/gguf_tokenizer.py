"""A GGUF file's own vocabulary as the tokenizer mlx-lm wraps.

The `tokenizers` library rebuilds it from `tokenizer.ggml.*`: byte-level BPE for
`gpt2`-style files (the pre-tokenizer picked by `tokenizer.ggml.pre`) and
SentencePiece-style BPE with byte fallback for `llama`-style files (merges
ranked by the pieces' scores). It is written as tokenizer.json plus
tokenizer_config.json (special tokens, the chat template) to a temporary
directory and loaded by mlx-lm's own loader, so the streaming detokenizer, EOS
ids and tool-call markers are inferred exactly as for a Hugging Face checkpoint.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("backends.mlx")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# `tokenizer.ggml.pre` -> the split before byte-level BPE (regexes as llama.cpp documents them).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}
_DIGITS_FIRST = {"smollm", "starcoder", "refact"}


class TokenizerError(Exception):
    """The GGUF's vocabulary is of a kind we cannot rebuild."""


def build_tokenizer(metadata: dict[str, Any]) -> Any:
    """The mlx-lm `TokenizerWrapper` for a GGUF's `tokenizer.ggml.*` metadata."""
    from mlx_lm.tokenizer_utils import load

    kind = metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in metadata:
        raise TokenizerError("the GGUF file holds no vocabulary (tokenizer.ggml.tokens)")
    if kind == "gpt2":
        tokenizer = byte_level_bpe(metadata)
    elif kind == "llama":
        tokenizer = sentencepiece_bpe(metadata)
    else:
        raise TokenizerError(f"GGUF tokenizer model '{kind}' is not supported (supported: gpt2, llama)")
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    with tempfile.TemporaryDirectory(prefix="gguf-tokenizer-") as directory:
        tokenizer.save(str(Path(directory) / "tokenizer.json"))
        config = tokenizer_config(metadata, tokens)
        (Path(directory) / "tokenizer_config.json").write_text(json.dumps(config))
        return load(Path(directory), eos_token_ids=stop_ids(metadata))


def stop_ids(metadata: dict[str, Any]) -> list[int]:
    keys = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
    return sorted({int(metadata[key]) for key in keys if key in metadata})


def tokenizer_config(metadata: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    """tokenizer_config.json: special tokens by id, BOS handling and the chat template."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(metadata.get("tokenizer.ggml.add_eos_token", False)),
    }
    for name in ("bos", "eos", "unknown", "padding"):
        token_id = metadata.get(f"tokenizer.ggml.{name}_token_id")
        if token_id is not None and 0 <= int(token_id) < len(tokens):
            short = {"unknown": "unk", "padding": "pad"}.get(name, name)
            config[f"{short}_token"] = tokens[int(token_id)]
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = metadata["tokenizer.chat_template"]
    return config


def byte_level_bpe(metadata: dict[str, Any]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    pre = str(metadata.get("tokenizer.ggml.pre", "gpt2"))
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges, ignore_merges=pre in _SPLITS))
    if pre in _SPLITS:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        if pre not in _DIGITS_FIRST | {"gpt2", "default"}:
            log.warning("gguf pre-tokenizer unknown, using gpt2's", pre=pre)
        steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if pre in _DIGITS_FIRST:
            steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    _add_special(tokenizer, metadata)
    return tokenizer


def sentencepiece_bpe(metadata: dict[str, Any]) -> Any:
    """SentencePiece BPE: merges ranked by the merged piece's score, bytes as <0xNN>."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    scores: list[float] = metadata.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    vocab = {token: index for index, token in enumerate(tokens)}
    ranked = []
    for merged, index in vocab.items():
        if types[index] != NORMAL:
            continue
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[index], vocab[left], vocab[right], left, right))
    merges = [(left, right) for *_, left, right in sorted(ranked)]
    unknown = int(metadata.get("tokenizer.ggml.unknown_token_id", 0))
    tokenizer = Tokenizer(
        models.BPE(vocab, merges, unk_token=tokens[unknown], fuse_unk=True, byte_fallback=True)
    )
    prefix_space = bool(metadata.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if prefix_space else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix_space:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    _add_special(tokenizer, metadata)
    return tokenizer


def _add_special(tokenizer: Any, metadata: dict[str, Any]) -> None:
    """Control tokens as special (skipped when decoding), user-defined ones as plain added tokens."""
    from tokenizers import AddedToken

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    types: list[int] = metadata.get("tokenizer.ggml.token_type") or []
    control = [
        AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == CONTROL
    ]
    user = [
        AddedToken(tokens[i], special=False, normalized=False)
        for i, t in enumerate(types)
        if t == USER_DEFINED
    ]
    tokenizer.add_special_tokens(control)
    tokenizer.add_tokens(user)
