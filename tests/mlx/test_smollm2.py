"""The real SmolLM2-135M-Instruct (a Q4_1 GGUF) through the gateway and the openai client."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.apps import mlx_app
from tests.support.server import running_server
from tests.support.smollm2 import SMOLLM2, SYSTEM_PROMPT, smollm2_gguf

mx = pytest.importorskip("mlx.core")

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colours.",
]


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return smollm2_gguf()


@pytest.fixture(scope="module")
def server(gguf_path: Path) -> Iterator[str]:
    models = {
        "SmolLM2-135M-Instruct": {"backend": "mlx", "path": SMOLLM2, "aliases": ["smollm2"]},
        "smollm2-f32": {"backend": "mlx", "path": str(gguf_path), "options": {"dtype": "float32"}},
    }
    with running_server(mlx_app(models)) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def raw(gguf_path: Path) -> tuple[Any, Any]:
    """The same weights loaded straight, for mlx_lm's own generation."""
    from backends.mlx.gguf import load_gguf

    return load_gguf(gguf_path, None)


@pytest.mark.parametrize("model", ["smollm2", "smollm2-f32"])
def test_greedy_answer_names_paris(client: openai.OpenAI, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=CAPITAL, temperature=0, max_tokens=30)
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop"


def test_greedy_output_equals_mlx_lm_token_for_token(client: openai.OpenAI, raw: tuple[Any, Any]) -> None:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = raw
    for text in PROMPTS:
        messages = [{"role": "user", "content": text}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        steps = list(stream_generate(model, tokenizer, prompt, max_tokens=24, sampler=make_sampler(0.0)))
        expected = [step.token for step in steps if step.token not in tokenizer.eos_token_ids]
        answer = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, max_tokens=24, logprobs=True
        )
        tokens = answer.choices[0].logprobs.content
        got = b"".join(bytes(token.bytes) for token in tokens)
        assert got == tokenizer.decode(expected).encode(), text
        assert len(tokens) == len(expected) == answer.usage.completion_tokens - (len(expected) < 24)
        assert answer.usage.prompt_tokens == len(prompt)


def test_three_turn_chat_reuses_the_previous_turns(client: openai.OpenAI) -> None:
    messages: list[dict[str, str]] = []
    previous_prompt = 0
    for turn, text in enumerate(["Hi! Who are you?", "What is 2 plus 2?", "Thanks, and 3 plus 3?"]):
        messages.append({"role": "user", "content": text})
        answer = client.chat.completions.create(
            model="smollm2", messages=messages, temperature=0, max_tokens=24
        )
        cached = answer.usage.prompt_tokens_details.cached_tokens
        if turn:
            assert cached >= previous_prompt, (turn, cached, previous_prompt)
        previous_prompt = answer.usage.prompt_tokens
        messages.append({"role": "assistant", "content": answer.choices[0].message.content})


def test_streamed_equals_non_streamed(client: openai.OpenAI) -> None:
    body = {"model": "smollm2", "messages": CAPITAL, "temperature": 0, "max_tokens": 24}
    whole = client.chat.completions.create(**body)
    stream = client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_gguf_chat_template_renders_the_prompt(raw: tuple[Any, Any]) -> None:
    import msgspec

    from backends.mlx.prompt import build_prompt
    from gateway.protocol import ChatCompletionRequest

    _, tokenizer = raw
    request = msgspec.convert({"model": "smollm2", "messages": CAPITAL}, ChatCompletionRequest)
    prompt = build_prompt(tokenizer, request)
    default_system = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"  # the GGUF template's own
    assert prompt.text.startswith(default_system)
    assert prompt.text.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(prompt.tokens) == prompt.text
    assert prompt.tokens.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # one token each


def test_ollama_store_serves_smollm2(
    gguf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / f"sha256-{digest}").symlink_to(gguf_path)
    manifest = tmp_path / "manifests/registry.ollama.ai/library/smollm2/135m"
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64, "size": 1},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 98362432},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    models = {
        "smollm2": {"backend": "mlx", "path": "ollama:smollm2:135m"},
        "absent": {"backend": "mlx", "path": "ollama:llama3.2"},
    }
    with running_server(mlx_app(models)) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
        answer = client.chat.completions.create(
            model="smollm2", messages=CAPITAL, temperature=0, max_tokens=30
        )
        assert "Paris" in answer.choices[0].message.content
        missing = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "absent", "messages": CAPITAL})
    assert missing.status_code == 503 and missing.headers["x-should-retry"] == "false"
    assert "Ollama model 'llama3.2:latest' is not in the store" in missing.json()["error"]["message"]


def test_gateway_pull_uses_the_cached_copy(gguf_path: Path) -> None:
    """`make serve` runs `gateway pull smollm2` against the default config."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "gateway.cli", "pull", "--config", str(root / "config.toml"), "smollm2"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"SmolLM2-135M-Instruct: {gguf_path}"
