"""Chat requests -> prompt text and tokens, through the test model's chat template."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from backends.mlx.prompt import Prompt, build_prompt, takes_tools, template_arguments
from backends.mlx.tool_choice import GENERIC, tool_format
from gateway.errors import BackendFailed, InvalidRequest, UnsupportedField
from gateway.protocol import ChatCompletionRequest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
OPEN_THINK = "<|im_start|>assistant\n<think>\n"
EMPTY_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
# Renders every role as-is and mentions the developer role, so it is not mapped.
ROLE_TEMPLATE = (
    "{# supports the developer role #}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "[effort={{ reasoning_effort | default('unset') }}]{% endif %}"
)


def request(*messages: dict[str, Any], **fields: Any) -> ChatCompletionRequest:
    """Decode like the gateway does, so wire validation applies."""
    return msgspec.convert({"model": "m", "messages": list(messages), **fields}, ChatCompletionRequest)


def user(text: Any = "Hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_plain_chat_renders_chatml_and_encodes_without_extra_tokens(tiny_tokenizer: Any) -> None:
    prompt = build_prompt(tiny_tokenizer, request({"role": "system", "content": "Be brief."}, user("Hi")))
    assert isinstance(prompt, Prompt)
    assert (
        prompt.text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + OPEN_THINK
    )
    assert prompt.tokens == tiny_tokenizer.encode(prompt.text, add_special_tokens=False)
    assert prompt.tokens[0] == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tiny_tokenizer.decode(prompt.tokens) == prompt.text
    assert prompt.in_reasoning is True


@pytest.mark.parametrize(
    ("fields", "defaults", "thinking"),
    [
        ({}, {}, True),
        ({"enable_thinking": False}, {}, False),
        ({"enable_thinking": True}, {"enable_thinking": False}, True),
        ({}, {"enable_thinking": False}, False),
        ({"reasoning_effort": "none"}, {}, False),
        ({"reasoning_effort": "high"}, {"enable_thinking": False}, False),
        ({"reasoning_effort": "none", "enable_thinking": True}, {}, True),
    ],
)
def test_thinking_controls(tiny_tokenizer: Any, fields: dict, defaults: dict, thinking: bool) -> None:
    prompt = build_prompt(tiny_tokenizer, request(user(), **fields), template_kwargs=defaults)
    assert prompt.text.endswith(OPEN_THINK if thinking else EMPTY_THINK)
    assert prompt.in_reasoning is thinking


@pytest.mark.parametrize("thinking", [False, True])
def test_open_tool_call_ends_the_prompt_with_the_start_marker(tiny_tokenizer: Any, thinking: bool) -> None:
    """Only where the model is not left thinking: a call cannot start inside a think block."""
    req = request(user(), tools=[WEATHER_TOOL], enable_thinking=thinking)
    plain = build_prompt(tiny_tokenizer, req)
    opened = build_prompt(
        tiny_tokenizer, req, open_tool_call=True, tool_format=tool_format(tiny_tokenizer, False)
    )
    if thinking:
        assert opened == plain
        return
    start = tiny_tokenizer.tool_call_start
    assert (opened.text, opened.in_tool_call, opened.in_reasoning) == (plain.text + start, True, False)
    assert opened.tokens == plain.tokens + tiny_tokenizer.encode(start, add_special_tokens=False)


def test_template_arguments_layer_request_over_config() -> None:
    req = request(user(), reasoning_effort="none")
    assert template_arguments(req, {"enable_thinking": True, "x": 1}) == {
        "enable_thinking": False,
        "reasoning_effort": "none",
        "x": 1,
    }
    assert template_arguments(request(user())) == {}


def test_override_template_gets_reasoning_effort_and_template_kwargs(tiny_tokenizer: Any) -> None:
    prompt = build_prompt(
        tiny_tokenizer, request(user(), reasoning_effort="low"), chat_template=ROLE_TEMPLATE
    )
    assert prompt.text.endswith("<|im_start|>assistant\n[effort=low]")
    assert prompt.in_reasoning is False
    prompt = build_prompt(
        tiny_tokenizer,
        request(user()),
        chat_template=ROLE_TEMPLATE,
        template_kwargs={"reasoning_effort": "high"},
    )
    assert prompt.text.endswith("[effort=high]")


def test_tools_are_listed_unless_tool_choice_is_none(tiny_tokenizer: Any) -> None:
    shown = build_prompt(tiny_tokenizer, request(user(), tools=[WEATHER_TOOL], tool_choice="auto"))
    assert shown.text.startswith("<|im_start|>system\n# Tools\n")
    assert '"name": "get_weather", "description": "Current weather for a city"' in shown.text
    hidden = build_prompt(tiny_tokenizer, request(user(), tools=[WEATHER_TOOL], tool_choice="none"))
    assert "get_weather" not in hidden.text and "# Tools" not in hidden.text


def test_developer_becomes_system_unless_the_template_knows_it(tiny_tokenizer: Any) -> None:
    dev = {"role": "developer", "content": "Answer in French."}
    prompt = build_prompt(tiny_tokenizer, request(dev, user(), tools=[WEATHER_TOOL]))
    assert prompt.text.startswith("<|im_start|>system\nAnswer in French.\n\n# Tools")
    kept = build_prompt(tiny_tokenizer, request(dev, user()), chat_template=ROLE_TEMPLATE)
    assert kept.text.startswith("<|im_start|>developer\nAnswer in French.<|im_end|>")


def test_tool_round_trip_renders_calls_and_results(tiny_tokenizer: Any) -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    prompt = build_prompt(
        tiny_tokenizer,
        request(
            user("Weather and time in Paris?"),
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
            {"role": "function", "name": "get_time", "content": "14:00"},
        ),
    )
    assert (
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nSunny, 21C\n</tool_response>\n"
        "<tool_response>\n14:00\n</tool_response><|im_end|>\n" + OPEN_THINK
    ) in prompt.text


def test_legacy_function_call_is_rendered_as_a_tool_call(tiny_tokenizer: Any) -> None:
    legacy = {"role": "assistant", "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    prompt = build_prompt(
        tiny_tokenizer, request(user(), legacy, {"role": "function", "name": "x", "content": "ok"})
    )
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in prompt.text


@pytest.mark.parametrize(
    ("arguments", "reason"), [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")]
)
def test_bad_tool_call_arguments_name_the_field(tiny_tokenizer: Any, arguments: str, reason: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    req = request(user(), {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": "x"})
    with pytest.raises(InvalidRequest, match=reason) as caught:
        build_prompt(tiny_tokenizer, req)
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_reasoning_content_is_rendered_for_the_current_turn_only(tiny_tokenizer: Any) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    prompt = build_prompt(
        tiny_tokenizer,
        request(
            user("First"),
            {"role": "assistant", "content": "Old answer", "reasoning_content": "old thoughts"},
            user("Second"),
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": " new thoughts\n",
                "tool_calls": [call],
            },
            {"role": "tool", "content": "rainy"},
        ),
    )
    assert "old thoughts" not in prompt.text
    assert "<|im_start|>assistant\nOld answer<|im_end|>" in prompt.text
    assert "<|im_start|>assistant\n<think>\nnew thoughts\n</think>\n\n<tool_call>" in prompt.text


def test_text_parts_are_joined(tiny_tokenizer: Any) -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    assert (
        "<|im_start|>user\nHello, world<|im_end|>" in build_prompt(tiny_tokenizer, request(user(parts))).text
    )


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}, "vision model"),
        ({"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}, "audio model"),
        ({"type": "file", "file": {"file_id": "f1"}}, "file parts"),
    ],
)
def test_non_text_parts_are_unsupported(tiny_tokenizer: Any, part: dict, reason: str) -> None:
    req = request(user("ok"), user([{"type": "text", "text": "What is this?"}, part]))
    with pytest.raises(UnsupportedField, match=reason) as caught:
        build_prompt(tiny_tokenizer, req)
    assert caught.value.param == "messages[1].content"
    assert caught.value.code == "unsupported_parameter"


def test_template_refusal_becomes_an_invalid_request(tiny_tokenizer: Any) -> None:
    with pytest.raises(InvalidRequest, match="tool message must follow") as caught:
        build_prompt(tiny_tokenizer, request({"role": "tool", "content": "orphan"}, user()))
    assert caught.value.param == "messages"
    assert not isinstance(caught.value, UnsupportedField)


def test_broken_override_template_is_a_server_error(tiny_tokenizer: Any) -> None:
    with pytest.raises(BackendFailed, match="chat template is invalid"):
        build_prompt(tiny_tokenizer, request(user()), chat_template="{% for m in messages %}")


def test_in_reasoning_looks_at_the_generation_prompt_only(tiny_tokenizer: Any) -> None:
    # An unclosed think marker in the history must not put generation in reasoning mode.
    history = request(user("What does <think> mean?"))
    assert build_prompt(tiny_tokenizer, history, chat_template=ROLE_TEMPLATE).in_reasoning is False
    assert build_prompt(tiny_tokenizer, request(user("<think>"), enable_thinking=False)).in_reasoning is False


def test_model_without_a_chat_template_needs_one_configured(tmp_path: Any) -> None:
    from mlx_lm.tokenizer_utils import load

    from tests.support.mlx_tokenizer import build_tokenizer

    bare = load(build_tokenizer(tmp_path, vocab_size=300, chat_template=None))
    with pytest.raises(BackendFailed, match="no chat template"):
        build_prompt(bare, request(user()))
    prompt = build_prompt(bare, request(user("Hi")), chat_template=ROLE_TEMPLATE)
    assert prompt.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[effort=unset]"


def test_a_template_that_ignores_tools_gets_them_in_the_system_message(tiny_tokenizer: Any) -> None:
    assert takes_tools(tiny_tokenizer)
    assert not takes_tools(tiny_tokenizer, chat_template=ROLE_TEMPLATE)
    history = [
        {"role": "system", "content": "Be brief."},
        user("Weather?"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "Rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "Wind"},
    ]  # fmt: skip
    req = request(*history, tools=[WEATHER_TOOL])
    prompt = build_prompt(
        tiny_tokenizer, req, chat_template=ROLE_TEMPLATE, tool_format=GENERIC, open_tool_call=True
    )
    assert prompt.text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '"name": "get_weather"' in prompt.text and "<tool_call></tool_call> tags" in prompt.text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        in prompt.text
    )
    assert "<|im_start|>user\n<tool_response>\nRain\n</tool_response>\n<tool_response>\nWind" in prompt.text
    assert prompt.text.endswith("[effort=unset]<tool_call>") and prompt.in_tool_call
    plain = build_prompt(tiny_tokenizer, request(*history), chat_template=ROLE_TEMPLATE)
    assert "# Tools" not in plain.text
