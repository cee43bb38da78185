"""Grammar-constrained decoding on MLX through the real openai client: `response_format`
(json_object, json_schema, `chat.completions.parse`) and a forcing `tool_choice`.

The random tiny llama never learned to close a JSON value, so left alone it may
write one number or string for hundreds of tokens. Where a test needs answers
to end, a `logit_bias` on the tokens holding a quote, a comma or a closing brace
stands in for a trained model's preference; the grammar decides what is valid.
Scripted models pick the lowest allowed token id among ties, so a tight schema
(an enum, a const) gives a known answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pydantic
import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("llguidance")

from tests.mlx.test_api_tools import WEATHER as PARIS_WEATHER
from tests.mlx.test_api_tools import rebuild_stream
from tests.support.apps import mlx_app

USER = [{"role": "user", "content": "Hi!"}]
NO_THINKING = {"enable_thinking": False}
SEEDS = range(20)

NESTED = {
    "$defs": {
        "city": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "size": {"enum": ["small", "medium", "large"]},
            },
            "required": ["name", "size"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "home": {"$ref": "#/$defs/city"},
        "visited": {"type": "array", "items": {"$ref": "#/$defs/city"}, "minItems": 1, "maxItems": 3},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "mood": {"anyOf": [{"const": "happy"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,6}$"}, "maxItems": 2},
    },
    "required": ["home", "visited", "rating", "mood", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 16},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {
                "zone": {"enum": ["UTC", "CET", "JST"]},
                "hours": {"type": "integer", "maximum": 24},
            },
            "required": ["zone"],
        },
    },
}
TOOLS = [WEATHER, TIME]
ANSWER = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def json_schema(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=10)
    size: Literal["small", "large"]
    coastal: bool


@pytest.fixture(scope="module")
def app(scripted_model: Callable[[str], Path], tiny_llama_path: Path) -> Any:
    greedy = {"temperature": 0.0}
    scripted = {
        name: {"backend": "mlx", "path": str(scripted_model(name)), "defaults": greedy}
        for name in ("plain", "reasoning", "two_tool_calls")
    }
    return mlx_app(
        {
            "tiny": {"backend": "mlx", "path": str(tiny_llama_path)},
            "crowd": {"backend": "mlx", "path": str(tiny_llama_path)},
            **scripted,
        }
    )


@pytest.fixture(scope="module")
def closing_bias(tiny_tokenizer: Any) -> dict[str, float]:
    """+3 on every token of the tiny llama that holds a quote, a comma or a closing brace."""
    return {
        str(token): 3.0
        for token in range(len(tiny_tokenizer.vocab))
        if any(ch in tiny_tokenizer.decode([token]) for ch in '",}')
    }


def tiny(closing_bias: dict[str, float], seed: int, **fields: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": USER,
        "seed": seed,
        "max_tokens": 300,
        "logit_bias": closing_bias,
        "extra_body": NO_THINKING,
        **fields,
    }


# --- response_format ---------------------------------------------------------------------


def test_parse_returns_a_valid_instance_streamed_and_not(
    client: openai.OpenAI, closing_bias: dict[str, float]
) -> None:
    for seed in range(3):
        fields = tiny(closing_bias, seed)
        completion = client.chat.completions.parse(**fields, response_format=City)
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, City)
        with client.chat.completions.stream(**fields, response_format=City) as stream:
            streamed = stream.get_final_completion()
        assert streamed.choices[0].message.parsed == choice.message.parsed


def test_json_object_parses_for_every_seed(client: openai.OpenAI, closing_bias: dict[str, float]) -> None:
    for seed in SEEDS:
        completion = client.chat.completions.create(
            **tiny(closing_bias, seed), response_format={"type": "json_object"}
        )
        assert completion.choices[0].finish_reason == "stop", seed
        assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_nested_schema_validates_for_every_seed(
    client: openai.OpenAI, closing_bias: dict[str, float]
) -> None:
    for seed in SEEDS:
        completion = client.chat.completions.create(
            **tiny(closing_bias, seed), response_format=json_schema(NESTED)
        )
        assert completion.choices[0].finish_reason == "stop", seed
        jsonschema.validate(json.loads(completion.choices[0].message.content), NESTED)


def test_n_choices_each_follow_the_schema(client: openai.OpenAI, closing_bias: dict[str, float]) -> None:
    completion = client.chat.completions.create(
        **tiny(closing_bias, 7), n=3, temperature=1.0, response_format=json_schema(NESTED)
    )
    answers = [json.loads(choice.message.content) for choice in completion.choices]
    for answer in answers:
        jsonschema.validate(answer, NESTED)
    assert len({json.dumps(a) for a in answers}) > 1  # each row samples on its own


def test_reasoning_model_thinks_then_answers_in_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="reasoning", messages=USER, response_format=json_schema(ANSWER)
    )
    message = completion.choices[0].message
    assert message.model_extra["reasoning_content"] == "The user greets me."  # free while thinking
    jsonschema.validate(json.loads(message.content), ANSWER)
    no_thinking = client.chat.completions.create(
        model="reasoning", messages=USER, response_format=json_schema(ANSWER), extra_body=NO_THINKING
    )
    jsonschema.validate(json.loads(no_thinking.choices[0].message.content), ANSWER)


def test_logprobs_report_the_constrained_distribution(client: openai.OpenAI) -> None:
    const = {"type": "object", "properties": {"answer": {"const": "yes"}}, "required": ["answer"]}
    completion = client.chat.completions.create(
        model="plain", messages=USER, logprobs=True, extra_body=NO_THINKING,
        response_format=json_schema({**const, "additionalProperties": False}),
    )  # fmt: skip
    choice = completion.choices[0]
    assert json.loads(choice.message.content) == {"answer": "yes"}
    # every token is forced: the only allowed one has probability 1 (unconstrained: ~e^-14)
    assert all(entry.logprob == pytest.approx(0.0, abs=1e-5) for entry in choice.logprobs.content)


def test_max_tokens_mid_json_ends_with_length(client: openai.OpenAI, closing_bias: dict[str, float]) -> None:
    completion = client.chat.completions.create(
        **tiny(closing_bias, 1, max_tokens=4), response_format=json_schema(NESTED)
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content.startswith('{"home"')  # cut mid-JSON, as OpenAI does
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.message.content)


def test_stop_strings_still_cut_constrained_output(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="plain", messages=USER, stop=['"yes'], extra_body=NO_THINKING, response_format=json_schema(
            {"type": "object", "properties": {"answer": {"const": "yes"}}, "required": ["answer"],
             "additionalProperties": False}
        ),
    )  # fmt: skip
    assert completion.choices[0].message.content == '{"answer": '
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("response_format", "param", "reason"),
    [
        (json_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)a"}}}),
         "response_format.json_schema.schema", "look-around"),
        (json_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
         "response_format.json_schema.schema", "missing"),
        (json_schema({"type": "wat"}), "response_format.json_schema.schema", "wat"),
        ({"type": "json_schema", "json_schema": {"schema": {}}}, "response_format.json_schema.name", "name"),
        ({"type": "json_schema"}, "response_format.json_schema", "object"),
    ],
)  # fmt: skip
def test_bad_schemas_are_400s(client: openai.OpenAI, response_format: Any, param: str, reason: str) -> None:
    for stream in (False, True):  # streamed too: a 400 before the stream starts
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="tiny", messages=USER, response_format=response_format, stream=stream
            )
        assert caught.value.body["param"] == param
        assert reason in caught.value.body["message"]


def test_bench_refuses_a_grammar(server: str) -> None:
    body = {"model": "tiny", "messages": USER, "max_tokens": 4, "response_format": {"type": "json_object"}}
    reply = httpx.post(f"{server}/bench/chat/completions", json=body, timeout=60)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "response_format"


# --- tool_choice -------------------------------------------------------------------------


def _check_call(name: str, arguments: str, tools: list[dict[str, Any]]) -> None:
    (function,) = [tool["function"] for tool in tools if tool["function"]["name"] == name]
    jsonschema.validate(json.loads(arguments), function["parameters"])


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forced_tool_choice_always_gives_a_valid_call(
    client: openai.OpenAI, closing_bias: dict[str, float], tool_choice: Any
) -> None:
    names = set()
    for seed in SEEDS:  # (one call each: left free, this random model calls again and again)
        fields = tiny(closing_bias, seed, tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=False)
        choice = client.chat.completions.create(**fields).choices[0]
        assert choice.finish_reason == "tool_calls", seed
        assert not choice.message.content
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls]
        for name, arguments in calls:
            _check_call(name, arguments, TOOLS)
            names.add(name)
        streamed, finish = rebuild_stream(client.chat.completions.create(**fields, stream=True))
        assert finish == "tool_calls"
        assert [(c["name"], c["arguments"]) for c in streamed.values()] == calls
    assert names == ({"get_time"} if isinstance(tool_choice, dict) else names & {"get_weather", "get_time"})


def test_parallel_tool_calls_false_gives_exactly_one_call(
    client: openai.OpenAI, closing_bias: dict[str, float]
) -> None:
    # this model's script makes two calls; the grammar ends the answer after the first
    one = client.chat.completions.create(
        model="two_tool_calls", messages=USER, tools=[PARIS_WEATHER], tool_choice="required",
        parallel_tool_calls=False,
    )  # fmt: skip
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]
    assert one.choices[0].finish_reason == "tool_calls"
    for seed in range(5):
        fields = tiny(closing_bias, seed, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
        assert len(client.chat.completions.create(**fields).choices[0].message.tool_calls) == 1


def test_a_model_that_would_not_call_is_made_to(client: openai.OpenAI) -> None:
    """The plain model says "Hello there!" whatever it is asked; forced, it calls."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    choice = client.chat.completions.create(
        model="plain", messages=USER, tools=TOOLS, tool_choice=named, extra_body=NO_THINKING
    ).choices[0]
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    _check_call(call.function.name, call.function.arguments, TOOLS)


# --- in the batch ------------------------------------------------------------------------


def _schema(i: int) -> dict[str, Any]:
    """Eight different schemas, each over a hundred tokens long (so that every row is still
    running when the last request of the crowd joins)."""
    words = [f"w{i}{j}" for j in range(3)]
    return {
        "type": "object",
        "properties": {
            f"list{i}": {"type": "array", "items": {"enum": words}, "minItems": 40 + i, "maxItems": 60}
        },
        "required": [f"list{i}"],
        "additionalProperties": False,
    }


def test_constrained_and_free_requests_share_one_batch(app: Any, server: str) -> None:
    constrained = [
        {"model": "crowd", "messages": USER, "seed": 100 + i, "max_tokens": 600, "enable_thinking": False,
         "response_format": json_schema(_schema(i), f"s{i}")}
        for i in range(8)
    ]  # fmt: skip
    free = [
        {"model": "crowd", "messages": [{"role": "user", "content": f"Other {i}"}], "max_tokens": 240,
         "seed": i, "enable_thinking": False}
        for i in range(8)
    ]  # fmt: skip

    async def run(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=server, timeout=120) as http:
            replies = await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))
        return [reply.json()["choices"][0] for reply in replies]

    alone = asyncio.run(run([constrained[3]]))[0]
    crowd = asyncio.run(run([*free[:4], *constrained, *free[4:]]))
    assert crowd[4 + 3] == alone  # seeded and constrained: the same alone and in the crowd
    for i, choice in enumerate(crowd[4:12]):
        assert choice["finish_reason"] == "stop"
        jsonschema.validate(json.loads(choice["message"]["content"]), _schema(i))
    stats = app.state.registry.entries["crowd"].backend.stats()
    assert (stats["peak_rows"], stats["peak_grammar_rows"]) == (16, 8)
    assert stats["grammar_cache_hits"] >= 1  # schema 3, compiled when it ran alone


def test_grammar_cache_reuses_a_schema(
    app: Any, client: openai.OpenAI, closing_bias: dict[str, float]
) -> None:
    backend = app.state.registry.entries["tiny"].backend
    schema = json_schema({**ANSWER, "title": "cache-probe"})
    client.chat.completions.create(**tiny(closing_bias, 0), response_format=schema)
    before = backend.stats()
    client.chat.completions.create(**tiny(closing_bias, 1), response_format=schema)
    after = backend.stats()
    assert after["grammar_cache_hits"] == before["grammar_cache_hits"] + 1
    assert after["grammar_cache_misses"] == before["grammar_cache_misses"]
