"""GGUF files load as the checkpoint they were written from (offline, built by the tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends.mlx.gguf import GGUFError, estimate_bytes, load_gguf, tensor_summary
from backends.mlx.gguf_tokenizer import build_tokenizer
from tests.support.apps import mlx_app
from tests.support.gguf_models import write_gguf
from tests.support.server import running_server

mx = pytest.importorskip("mlx.core")
from mlx import nn
from mlx_lm import load as load_checkpoint

SAMPLE = 'Hello wörld, café 🙂 <think>x</think>\n<tool_call>\n{"a": [1, 2]}\n</tool_call> 12345'
TOKENS = [[5, 17, 200, 33, 401, 9, 77, 123, 300, 42]]


@pytest.fixture(scope="module")
def checkpoint(tiny_llama_path: Path) -> tuple[Any, Any]:
    return load_checkpoint(str(tiny_llama_path))


def logits(model: Any) -> Any:
    return model(mx.array(TOKENS)).astype(mx.float32)


def quantized_bits(model: Any) -> set[int]:
    return {module.bits for _, module in model.named_modules() if isinstance(module, nn.QuantizedLinear)}


def test_f32_gguf_is_the_checkpoint_with_its_tokenizer(
    tiny_llama_path: Path, checkpoint: tuple[Any, Any], tmp_path: Path
) -> None:
    reference, reference_tokenizer = checkpoint
    model, tokenizer = load_gguf(write_gguf(tiny_llama_path, tmp_path / "tiny.gguf"), None)
    assert mx.allclose(logits(model), logits(reference), atol=1e-4).item()  # q/k permutation undone
    assert tokenizer.encode(SAMPLE, add_special_tokens=False) == reference_tokenizer.encode(
        SAMPLE, add_special_tokens=False
    )
    messages = [{"role": "user", "content": "Hi"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True) == (
        reference_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    )
    assert tokenizer.eos_token_ids == reference_tokenizer.eos_token_ids
    assert type(tokenizer.detokenizer) is type(reference_tokenizer.detokenizer)
    assert tokenizer.tool_call_start == "<tool_call>" and tokenizer.think_start == "<think>"


@pytest.mark.parametrize(("kind", "bits"), [("Q8_0", 8), ("Q4_0", 4), ("Q4_1", 4)])
def test_types_mlx_holds_stay_quantized_unless_dtype_asks(
    tiny_llama_path: Path, checkpoint: tuple[Any, Any], tmp_path: Path, kind: str, bits: int
) -> None:
    path = write_gguf(tiny_llama_path, tmp_path / f"{kind}.gguf", quantization=kind)
    kept, _ = load_gguf(path, None)
    assert quantized_bits(kept) == {bits}
    assert isinstance(kept.model.embed_tokens, nn.QuantizedEmbedding)
    dequantized, _ = load_gguf(path, "float32")
    assert quantized_bits(dequantized) == set()
    assert dequantized.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32
    # The same weights either way; and close to the unquantized checkpoint.
    assert mx.allclose(logits(kept), logits(dequantized), atol=2e-2).item()
    tolerance = 0.05 if bits == 8 else 0.5
    assert mx.abs(logits(kept) - logits(checkpoint[0])).max().item() < tolerance * 6


def test_other_types_are_dequantized_by_the_gguf_package(
    tiny_llama_path: Path, checkpoint: tuple[Any, Any], tmp_path: Path
) -> None:
    path = write_gguf(tiny_llama_path, tmp_path / "q5.gguf", quantization="Q5_0")
    model, _ = load_gguf(path, None)
    assert quantized_bits(model) == set()
    assert model.model.layers[0].mlp.up_proj.weight.dtype == mx.float16
    assert mx.abs(logits(model) - logits(checkpoint[0])).max().item() < 1.0
    elements, _ = tensor_summary(path)
    assert estimate_bytes(path, None) == elements * 2  # dequantized to float16: not the file's size
    assert estimate_bytes(path, "float32") == elements * 4


def test_the_estimate_counts_the_weights_from_the_header(
    tiny_llama_path: Path, checkpoint: tuple[Any, Any], tmp_path: Path
) -> None:
    from mlx.utils import tree_flatten

    path = write_gguf(tiny_llama_path, tmp_path / "q8.gguf", quantization="Q8_0")
    parameters = sum(value.size for _, value in tree_flatten(checkpoint[0].parameters()))
    assert tensor_summary(path) == (parameters, {0, 8})  # F32 norms, Q8_0 matrices
    assert estimate_bytes(path, None) == path.stat().st_size
    assert estimate_bytes(path, "float32") == parameters * 4


def test_an_unsupported_architecture_is_a_load_error_naming_it(tiny_llama_path: Path, tmp_path: Path) -> None:
    path = write_gguf(tiny_llama_path, tmp_path / "gemma.gguf", architecture="gemma")
    with pytest.raises(GGUFError, match="architecture 'gemma' is not supported"):
        load_gguf(path, None)
    models = {"gemma": {"backend": "mlx", "path": str(path)}}
    with running_server(mlx_app(models)) as base_url:
        body = {"model": "gemma", "messages": [{"role": "user", "content": "Hi"}]}
        answer = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 503
    assert answer.headers["x-should-retry"] == "false"  # the official clients do not retry it
    assert "'gemma'" in answer.json()["error"]["message"]


def test_a_gguf_serves_through_the_gateway_like_its_checkpoint(tiny_llama_path: Path, tmp_path: Path) -> None:
    path = write_gguf(tiny_llama_path, tmp_path / "tiny.gguf")
    models = {
        "gguf": {"backend": "mlx", "path": str(path)},
        "hf": {"backend": "mlx", "path": str(tiny_llama_path)},
    }
    body = {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 12, "temperature": 0}
    with running_server(mlx_app(models)) as base_url:
        answers = [
            httpx.post(f"{base_url}/v1/chat/completions", json={"model": name, **body}, timeout=120).json()
            for name in ("gguf", "hf")
        ]
    assert answers[0]["choices"][0]["message"] == answers[1]["choices"][0]["message"]
    assert answers[0]["usage"]["completion_tokens"] == 12


# --- SentencePiece-style vocabularies -------------------------------------------------


def sentencepiece_metadata() -> dict[str, Any]:
    pieces = [
        "▁",
        "h",
        "e",
        "l",
        "o",
        "w",
        "r",
        "d",
        "he",
        "ll",
        "▁he",
        "llo",
        "▁hello",
        "▁w",
        "or",
        "▁wor",
        "ld",
    ]
    pieces += ["▁world"]
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *pieces]
    types = [2, 3, 3, *([6] * 256), *([1] * len(pieces))]
    scores = [0.0] * (3 + 256) + [-float(rank) for rank in range(len(pieces))]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }


def test_sentencepiece_vocabularies_merge_by_score_and_fall_back_to_bytes() -> None:
    metadata = sentencepiece_metadata()
    tokenizer = build_tokenizer(metadata)
    tokens = metadata["tokenizer.ggml.tokens"]
    ids = tokenizer.encode("hello world", add_special_tokens=False)
    assert [tokens[i] for i in ids] == ["▁hello", "▁world"]
    text = "hello wörld 🙂"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert "<0xC3>" in [tokens[i] for i in ids]  # ö is not a piece: its UTF-8 bytes are
    assert tokenizer.decode(ids) == text
    detokenizer = tokenizer.detokenizer
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == text
    assert tokenizer.eos_token_ids == {2} and tokenizer.bos_token == "<s>"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)
    assert rendered == "<s>hello"


def test_an_unknown_tokenizer_model_is_named() -> None:
    from backends.mlx.gguf_tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="'bert'"):
        build_tokenizer({**sentencepiece_metadata(), "tokenizer.ggml.model": "bert"})
    without_vocabulary = {
        key: value for key, value in sentencepiece_metadata().items() if "tokens" not in key
    }
    with pytest.raises(TokenizerError, match="no vocabulary"):
        build_tokenizer(without_vocabulary)


def test_gguf_writer_metadata_round_trips(tiny_llama_path: Path, tmp_path: Path) -> None:
    from backends.mlx.gguf import read_gguf

    _, metadata, native = read_gguf(write_gguf(tiny_llama_path, tmp_path / "tiny.gguf"))
    config = json.loads((tiny_llama_path / "config.json").read_text())
    assert native and metadata["llama.block_count"] == config["num_hidden_layers"]
    assert len(metadata["tokenizer.ggml.tokens"]) == config["vocab_size"]


def test_a_hub_model_offline_and_uncached_is_not_retried_by_the_sdk(tmp_path: Path) -> None:
    import openai

    models = {"hub": {"backend": "mlx", "path": "mlx-community/not-cached-anywhere-4bit"}}
    sent: list[httpx.Request] = []
    with running_server(mlx_app(models)) as base_url:
        client = openai.OpenAI(
            base_url=f"{base_url}/v1",
            api_key="unused",
            max_retries=2,
            http_client=httpx.Client(event_hooks={"request": [sent.append]}),
        )
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model="hub", messages=[{"role": "user", "content": "Hi"}])
    assert raised.value.status_code == 503 and raised.value.code == "model_load_failed"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1  # without the header the client would have tried three times


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_qwen_family_ggufs_are_their_checkpoints(family: str, tmp_path: Path) -> None:
    from tests.support.gguf_models import build_tiny_model

    directory = tmp_path / family
    directory.mkdir()
    checkpoint = build_tiny_model(directory, family)
    reference, _ = load_checkpoint(str(checkpoint))
    model, _ = load_gguf(write_gguf(checkpoint, tmp_path / f"{family}.gguf", architecture=family), None)
    assert type(model).__module__ == f"mlx_lm.models.{family}"
    assert mx.allclose(logits(model), logits(reference), atol=1e-4).item()


def test_llama31_rope_factors_scale_like_mlx_lms_llama3_rope(tmp_path: Path) -> None:
    from tests.support.gguf_models import build_tiny_model

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,  # so the tiny model's wavelengths span all three bands
    }
    directory = tmp_path / "llama31"
    directory.mkdir()
    checkpoint = build_tiny_model(directory, "llama", rope_theta=10000.0, rope_scaling=scaling)
    reference, _ = load_checkpoint(str(checkpoint))
    model, _ = load_gguf(write_gguf(checkpoint, tmp_path / "llama31.gguf"), None)
    tokens = mx.array([[(7 * i) % 500 for i in range(200)]])
    expected = reference(tokens).astype(mx.float32)
    assert mx.allclose(model(tokens).astype(mx.float32), expected, atol=1e-4).item()
    for layer in model.model.layers:  # the factors matter: plain RoPE gives other logits
        layer.self_attn.rope = nn.RoPE(16, base=10000.0)
    assert not mx.allclose(model(tokens).astype(mx.float32), expected, atol=1e-3).item()
