"""/v1/completions and /v1/embeddings on the echo backend: the wire format, bad bodies,
and the OpenAPI description (the MLX tests check values: tests/mlx/test_completions.py)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest


def test_openapi_describes_both_routes(echo_server: str) -> None:
    schema = httpx.get(f"{echo_server}/schema/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"prompt", "echo", "logprobs", "best_of", "suffix", "top_k"} <= set(
        components["CompletionCreate"]["properties"]
    )
    assert {"input", "encoding_format", "dimensions", "user"} == set(
        components["EmbeddingCreate"]["properties"]
    ) - {"model"}
    for path, request, answer in [
        ("/v1/completions", "CompletionCreate", "TextCompletion"),
        ("/v1/embeddings", "EmbeddingCreate", "EmbeddingList"),
    ]:
        operation = schema["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(request)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(answer)


def test_the_answer_is_a_text_completion(echo_server: str) -> None:
    response = httpx.post(
        f"{echo_server}/v1/completions", json={"model": "echo", "prompt": "a b c", "max_tokens": 2}
    )
    body = response.json()
    assert response.status_code == 200 and response.headers["x-request-id"].startswith("req_")
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"text": "a b", "index": 0, "logprobs": None, "finish_reason": "length"}]
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 2


def test_stream_chunks_and_done(echo_server: str) -> None:
    with httpx.stream(
        "POST", f"{echo_server}/v1/completions", json={"model": "echo", "prompt": "a b", "stream": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all('"object":"text_completion"' in line and '"usage"' not in line for line in lines[:-1])


def test_echo_and_n_across_prompts(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="echo", prompt=["x y", "z"], n=3, echo=True, max_tokens=1)
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "x yx"), (1, "x yx"), (2, "x yx"), (3, "zz"), (4, "zz"), (5, "zz"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("completions", {"model": "echo"}, "prompt"),
        ("completions", {"model": "echo", "prompt": "a", "messages": []}, "messages"),
        ("completions", {"model": "echo", "prompt": 3}, "prompt"),
        ("completions", {"model": "echo", "prompt": [True]}, "prompt"),
        (
            "completions",
            {"model": "echo", "prompt": "a", "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ("completions", {"model": "echo", "prompt": "a", "best_of": 3}, "best_of"),
        ("completions", {"model": "echo", "prompt": "a", "logprobs": 1}, "logprobs"),
        ("completions", {"model": "echo", "prompt": "a", "suffix": "b"}, "suffix"),
        ("completions", {"model": "echo", "prompt": "a", "max_tokens": 0}, "max_tokens"),
        ("completions", {"model": "echo", "prompt": ["a"] * 50, "n": 3}, "n"),
        ("completions", {"model": "nope", "prompt": "a"}, "model"),
        ("embeddings", {"model": "echo", "input": "a"}, "input"),
        ("embeddings", {"model": "echo"}, "input"),
        ("embeddings", {"model": "echo", "input": {"a": 1}}, "input"),
    ],
)
def test_bad_bodies_get_openai_error_objects(
    echo_server: str, path: str, body: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{echo_server}/v1/{path}", json=body)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_invalid_json_is_a_400(echo_server: str) -> None:
    for path in ("completions", "embeddings"):
        response = httpx.post(f"{echo_server}/v1/{path}", content=b"{not json")
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
