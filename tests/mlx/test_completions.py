"""Legacy completions on the MLX backend: the official openai client, a real server.

Scripted models say their script greedily after any prompt (see
`tests.support.mlx_scripted`), so a raw prompt's continuation is known exactly;
that the prompt went raw shows in its token count and its echoed logprobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("mlx.core")

from tests.support.apps import mlx_app
from tests.support.mlx_models import EOS, RUNNER_UP, Script, expected_logprobs, script_info

SCRIPTED = ("plain", "stop", "endless")
# A code model's fill-in-the-middle tokens, then what it writes after `<|fim_middle|>`.
FIM = Script(("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "return", " 1", EOS))
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def model_paths(scripted_model: Callable[[str], Path], tiny_llama_path: Path) -> dict[str, Path]:
    return {
        "tiny": tiny_llama_path,
        "fim": scripted_model(FIM),
        **{name: scripted_model(name) for name in SCRIPTED},
    }


@pytest.fixture(scope="module")
def app(model_paths: dict[str, Path]) -> Any:
    models = {
        name: {"backend": "mlx", "path": str(path), "defaults": {"temperature": 0.0}}
        for name, path in model_paths.items()
        if name in SCRIPTED
    }
    models["tiny"] = {"backend": "mlx", "path": str(model_paths["tiny"])}
    models["fim"] = {"backend": "mlx", "path": str(model_paths["fim"]), "defaults": {"temperature": 0.0}}
    models["tiny-chunked"] = {
        "backend": "mlx",
        "path": str(model_paths["tiny"]),
        "options": {"prefill_step_size": 16},
    }
    models["small-context"] = {
        "backend": "mlx",
        "path": str(model_paths["plain"]),
        "options": {"max_context": 20},
        "defaults": {"temperature": 0.0},
    }
    return mlx_app(models)


@pytest.fixture(scope="module")
def tokenizer(model_paths: dict[str, Path]) -> Any:
    from mlx_lm.tokenizer_utils import load

    return load(model_paths["plain"])


def test_a_string_prompt_is_continued_raw(client: openai.OpenAI, tokenizer: Any) -> None:
    completion = client.completions.create(model="plain", prompt=PROMPT)
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    [choice] = completion.choices
    assert (choice.index, choice.text, choice.finish_reason, choice.logprobs) == (
        0,
        "Hello there!",
        "stop",
        None,
    )
    # No chat template: the prompt's own tokens, nothing around them.
    assert completion.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert completion.usage.completion_tokens == 4  # three words and the end of sequence


def test_token_id_prompts_go_to_the_model_as_sent(
    client: openai.OpenAI, model_paths: dict[str, Path]
) -> None:
    hello = script_info(model_paths["plain"])["tokens"][0]  # the script's own "Hello" token
    completion = client.completions.create(model="plain", prompt=[hello])
    assert completion.choices[0].text == " there!"  # the script, continued from its first token
    assert completion.usage.prompt_tokens == 1
    several = client.completions.create(model="plain", prompt=[[hello], [7, 8, 9]])
    assert [c.text for c in several.choices] == [" there!", "Hello there!"]


def test_a_list_of_prompts_with_n_is_indexed_prompt_major(
    client: openai.OpenAI, model_paths: dict[str, Path]
) -> None:
    hello = script_info(model_paths["plain"])["tokens"][0]
    completion = client.completions.create(model="plain", prompt=[[hello], [5, 6]], n=2)
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, " there!"),
        (1, " there!"),
        (2, "Hello there!"),
        (3, "Hello there!"),
    ]
    assert completion.usage.prompt_tokens == 3  # summed over prompts, once per prompt
    assert completion.usage.completion_tokens == 2 * 3 + 2 * 4


def test_echo_puts_the_prompt_first(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="plain", prompt=[PROMPT, "Hi"], echo=True)
    assert [c.text for c in completion.choices] == [PROMPT + "Hello there!", "HiHello there!"]


def test_legacy_logprobs(client: openai.OpenAI, model_paths: dict[str, Path]) -> None:
    want = expected_logprobs(script_info(model_paths["plain"])["vocab_size"])
    completion = client.completions.create(model="plain", prompt=PROMPT, logprobs=2)
    logprobs = completion.choices[0].logprobs
    # The end of sequence is a token of the answer too (not of its text), as the legacy API lists it.
    assert logprobs.tokens == ["Hello", " there", "!", "<|im_end|>"]
    assert logprobs.token_logprobs == pytest.approx([want.successor] * 4, abs=1e-4)
    assert logprobs.text_offset == [0, 5, 11, 12]
    for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert list(top) == [token, RUNNER_UP]
        assert top[RUNNER_UP] == pytest.approx(want.runner_up, abs=1e-4)


def test_echo_with_logprobs_scores_the_prompt(client: openai.OpenAI, tokenizer: Any) -> None:
    completion = client.completions.create(model="plain", prompt=PROMPT, echo=True, logprobs=1, max_tokens=1)
    logprobs = completion.choices[0].logprobs
    prompt_tokens = [tokenizer.decode([token]) for token in tokenizer.encode(PROMPT)]
    assert logprobs.tokens == [*prompt_tokens, "Hello"]
    assert logprobs.token_logprobs[0] is None
    assert all(isinstance(value, float) and value <= 0 for value in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens) == completion.choices[0].text == PROMPT + "Hello"
    assert logprobs.text_offset[len(prompt_tokens)] == len(PROMPT)
    assert [len(top) for top in logprobs.top_logprobs] == [0] + [1] * len(prompt_tokens)
    assert completion.choices[0].finish_reason == "length"


def test_a_long_prompt_is_scored_in_chunks_with_the_same_logprobs(client: openai.OpenAI) -> None:
    fields: dict[str, Any] = {"prompt": " ".join(["lighthouse keeper"] * 12), "echo": True, "logprobs": 3}
    whole = client.completions.create(model="tiny", max_tokens=1, temperature=0, **fields).choices[0].logprobs
    chunked = client.completions.create(model="tiny-chunked", max_tokens=1, temperature=0, **fields)
    logprobs = chunked.choices[0].logprobs
    assert len(logprobs.tokens) > 40 and logprobs.tokens == whole.tokens
    assert logprobs.token_logprobs[0] is None
    assert logprobs.token_logprobs[1:] == pytest.approx(whole.token_logprobs[1:], abs=1e-4)
    assert [list(top) for top in logprobs.top_logprobs] == [list(top) for top in whole.top_logprobs]


def test_echo_with_logprobs_of_a_one_token_prompt(
    client: openai.OpenAI, model_paths: dict[str, Path]
) -> None:
    hello = script_info(model_paths["plain"])["tokens"][0]
    completion = client.completions.create(model="plain", prompt=[hello], echo=True, logprobs=0, max_tokens=1)
    logprobs = completion.choices[0].logprobs
    assert completion.choices[0].text == "Hello there"
    assert logprobs.tokens == ["Hello", " there"] and logprobs.token_logprobs[0] is None


def test_best_of_keeps_the_highest_mean_logprob(client: openai.OpenAI) -> None:
    def mean(choice: Any) -> float:
        values = choice.logprobs.token_logprobs
        return sum(values) / len(values)

    fields: dict[str, Any] = {
        "model": "tiny",
        "prompt": PROMPT,
        "max_tokens": 6,
        "temperature": 1.0,
        "seed": 5,
    }
    candidates = client.completions.create(**fields, n=4, logprobs=0).choices
    assert len({c.text for c in candidates}) > 1
    ranked = sorted(candidates, key=mean, reverse=True)
    best = client.completions.create(**fields, n=2, best_of=4, logprobs=0).choices
    assert [(c.index, c.text) for c in best] == [(0, ranked[0].text), (1, ranked[1].text)]
    without_logprobs = client.completions.create(**fields, best_of=4).choices
    assert [(c.text, c.logprobs) for c in without_logprobs] == [(ranked[0].text, None)]


def test_stop_strings_and_the_default_limit(client: openai.OpenAI) -> None:
    stopped = client.completions.create(model="stop", prompt=PROMPT, stop=[" two"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("Counting: one,", "stop")
    endless = client.completions.create(model="endless", prompt=PROMPT)
    assert (endless.choices[0].text, endless.choices[0].finish_reason) == ("la" * 16, "length")


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "plain", "prompt": PROMPT},
        {"model": "stop", "prompt": [PROMPT, "Hi"], "n": 2, "stop": ", three", "echo": True},
        {"model": "plain", "prompt": PROMPT, "logprobs": 2, "echo": True},
        {"model": "endless", "prompt": PROMPT, "max_tokens": 5},
    ],
)
def test_streamed_equals_non_streamed(client: openai.OpenAI, fields: dict[str, Any]) -> None:
    whole = client.completions.create(**fields)
    chunks = list(client.completions.create(**fields, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.object == "text_completion" for chunk in chunks)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.total_tokens == whole.usage.total_tokens > 0
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        whole.usage.prompt_tokens,
        whole.usage.completion_tokens,
    )
    for choice in whole.choices:
        parts = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(part.text for part in parts) == choice.text
        assert parts[-1].finish_reason == choice.finish_reason
        if choice.logprobs is not None:
            streamed = [part.logprobs for part in parts if part.logprobs]
            assert [token for lp in streamed for token in lp.tokens] == choice.logprobs.tokens
            assert [offset for lp in streamed for offset in lp.text_offset] == choice.logprobs.text_offset


def test_suffix_fills_in_the_middle_on_a_model_with_fim_tokens(
    client: openai.OpenAI, model_paths: dict[str, Path]
) -> None:
    from mlx_lm.tokenizer_utils import load

    tokenizer = load(model_paths["fim"])
    prompt, suffix = "def one():\n    ", "\n\nprint(one())"
    completion = client.completions.create(model="fim", prompt=prompt, suffix=suffix)
    assert (completion.choices[0].text, completion.choices[0].finish_reason) == ("return 1", "stop")
    wrapped = len(tokenizer.encode(prompt)) + len(tokenizer.encode(suffix, add_special_tokens=False)) + 3
    assert completion.usage.prompt_tokens == wrapped
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="fim", prompt=prompt, suffix=suffix, echo=True)
    assert refused.value.body["param"] == "suffix"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": PROMPT, "suffix": " the end."}, "suffix"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, "two"]}, "prompt"),
        ({"prompt": [[1], []]}, "prompt[1]"),
        ({"prompt": [[10**6]]}, "prompt"),
        ({"prompt": PROMPT, "logprobs": 6}, "logprobs"),
        ({"prompt": PROMPT, "best_of": 2, "n": 3}, "best_of"),
        ({"prompt": PROMPT, "best_of": 2, "stream": True}, "best_of"),
        ({"prompt": PROMPT, "messages": []}, "messages"),
        ({"prompt": "word " * 30, "model": "small-context"}, "prompt"),
    ],
)
def test_bad_bodies_get_400_error_objects(server: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{server}/v1/completions", json={"model": "plain", **body}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(f"{server}/health").status_code == 200


def test_nan_never_reaches_the_wire(server: str) -> None:
    response = httpx.post(
        f"{server}/v1/completions",
        json={"model": "plain", "prompt": PROMPT, "echo": True, "logprobs": 0, "max_tokens": 1},
        timeout=30,
    )
    assert "NaN" not in response.text and not math.isnan(
        response.json()["choices"][0]["logprobs"]["token_logprobs"][1]
    )


def test_the_upstream_backend_forwards_completions(client: openai.OpenAI, server: str) -> None:
    """A front gateway's `openai` backend in front of this one: the same answer, legacy
    logprobs (the echoed prompt's null first) and all."""
    from tests.test_upstream_completions import front_for

    fields: dict[str, Any] = {"prompt": [PROMPT, "Hi"], "n": 2, "echo": True, "logprobs": 1, "max_tokens": 3}
    direct = client.completions.create(model="plain", **fields)
    with front_for(server, "plain") as front:
        forwarded = front.completions.create(model="remote", **fields)
    assert [c.model_dump() for c in forwarded.choices] == [c.model_dump() for c in direct.choices]
    assert forwarded.choices[0].logprobs.token_logprobs[0] is None
