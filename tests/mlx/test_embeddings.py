"""Embeddings on the MLX backend: the official openai client against a real server.

The expected vectors are computed here from the checkpoint itself (final hidden
states of `model.model`, pooled, L2-normalised), so the served ones are checked
value by value, not only by shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("mlx.core")

import mlx.core as mx
import numpy as np

from tests.support.apps import mlx_app

TEXTS = ["the quick brown fox", "jumps", "the quick brown fox", "over the lazy dog"]


@pytest.fixture(scope="module")
def app(tiny_llama_path: Path) -> Any:
    path = str(tiny_llama_path)
    return mlx_app(
        {
            "tiny": {"backend": "mlx", "path": path},
            "tiny-last": {"backend": "mlx", "path": path, "options": {"embedding_pooling": "last"}},
            "tiny-matryoshka": {"backend": "mlx", "path": path, "options": {"embedding_dimensions": True}},
            "tiny-small": {"backend": "mlx", "path": path, "options": {"max_context": 8}},
        }
    )


@pytest.fixture(scope="module")
def reference(tiny_llama_path: Path) -> Any:
    """(tokenize, expected vector) straight from the checkpoint, one input at a time."""
    from mlx_lm import load

    model, tokenizer = load(str(tiny_llama_path))

    def expected(text: str, pooling: str = "mean") -> np.ndarray:
        hidden = model.model(mx.array([tokenizer.encode(text)]))[0].astype(mx.float32)
        vector = np.array(hidden.mean(axis=0) if pooling == "mean" else hidden[-1])
        return vector / np.linalg.norm(vector)

    return tokenizer.encode, expected


def hidden_size(path: Path) -> int:
    return json.loads((path / "config.json").read_text())["hidden_size"]


def test_one_unit_vector_per_input_in_order(
    client: openai.OpenAI, tiny_llama_path: Path, reference: Any
) -> None:
    tokenize, expected = reference
    answer = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    assert answer.object == "list" and answer.model == "tiny"
    assert [item.index for item in answer.data] == [0, 1, 2, 3]
    vectors = [np.array(item.embedding) for item in answer.data]
    for text, vector in zip(TEXTS, vectors, strict=True):
        assert vector.shape == (hidden_size(tiny_llama_path),)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(vector, expected(text), atol=2e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    tokens = sum(len(tokenize(text)) for text in TEXTS)
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (tokens, tokens)


def test_batched_inputs_equal_single_ones(client: openai.OpenAI) -> None:
    batch = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float").data
    for text, item in zip(TEXTS, batch, strict=True):
        [alone] = client.embeddings.create(model="tiny", input=text, encoding_format="float").data
        np.testing.assert_allclose(alone.embedding, item.embedding, atol=1e-5)


def test_base64_equals_float(client: openai.OpenAI, server: str) -> None:
    floats = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float").data
    default = client.embeddings.create(model="tiny", input=TEXTS).data  # the client asks for base64
    assert [item.embedding for item in default] == [item.embedding for item in floats]
    raw = httpx.post(
        f"{server}/v1/embeddings", json={"model": "tiny", "input": "jumps", "encoding_format": "base64"}
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)


def test_token_id_inputs(client: openai.OpenAI, reference: Any) -> None:
    tokenize, _ = reference
    text = client.embeddings.create(model="tiny", input=TEXTS[:2], encoding_format="float").data
    one = client.embeddings.create(model="tiny", input=tokenize(TEXTS[0]), encoding_format="float").data
    both = client.embeddings.create(
        model="tiny", input=[tokenize(t) for t in TEXTS[:2]], encoding_format="float"
    ).data
    assert one[0].embedding == text[0].embedding
    assert [item.embedding for item in both] == [item.embedding for item in text]


def test_last_token_pooling_is_configurable(client: openai.OpenAI, reference: Any) -> None:
    _, expected = reference
    [item] = client.embeddings.create(model="tiny-last", input=TEXTS[0], encoding_format="float").data
    np.testing.assert_allclose(item.embedding, expected(TEXTS[0], "last"), atol=2e-5)


def test_dimensions_honoured_where_the_model_allows_it(client: openai.OpenAI) -> None:
    [full] = client.embeddings.create(model="tiny", input=TEXTS[0], encoding_format="float").data
    [cut] = client.embeddings.create(
        model="tiny-matryoshka", input=TEXTS[0], dimensions=16, encoding_format="float"
    ).data
    want = np.array(full.embedding[:16])
    np.testing.assert_allclose(cut.embedding, want / np.linalg.norm(want), atol=1e-5)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="tiny", input=TEXTS[0], dimensions=16)
    assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_many:
        client.embeddings.create(model="tiny-matryoshka", input=TEXTS[0], dimensions=10_000)
    assert too_many.value.body["param"] == "dimensions"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input[0]"),
        ({"input": []}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": [[1, 2], []]}, "input[1]"),
        ({"input": ["a", 3]}, "input[1]"),
        ({"input": ["a"] * 2049}, "input"),
        ({"input": [[10**7]]}, "input"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "stream": True}, "stream"),
        ({"input": "one two three four five six seven eight nine", "model": "tiny-small"}, "input"),
    ],
)
def test_bad_bodies_get_400_error_objects(server: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server}/v1/embeddings", json={"model": "tiny", **body}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(f"{server}/health").status_code == 200


def test_the_upstream_backend_forwards_embeddings(client: openai.OpenAI, server: str) -> None:
    """A front gateway's `openai` backend in front of this one: the same vectors and usage."""
    from tests.test_upstream_completions import front_for

    direct = client.embeddings.create(model="tiny", input=TEXTS, encoding_format="float")
    with front_for(server, "tiny") as front:
        forwarded = front.embeddings.create(model="remote", input=TEXTS)
        assert [item.embedding for item in forwarded.data] == [item.embedding for item in direct.data]
        assert forwarded.usage.prompt_tokens == direct.usage.prompt_tokens
        with pytest.raises(openai.BadRequestError) as refused:  # the upstream's own 400, passed on
            front.embeddings.create(model="remote", input=TEXTS, dimensions=4)
        assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
