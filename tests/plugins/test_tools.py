"""plugins/tools.py + plugins/calculator.py: server-side tools, run by the gateway, hidden from clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msgspec
import pytest

from gateway import ChatCompletionRequest, ConfigError, Tool, create_app, hookimpl
from plugins import tools as tools_plugin
from plugins.calculator import calculate
from tests.plugins.helpers import PATHS, ask, client, gateway_config, production_manager, serve

pytestmark = pytest.mark.hooks("register_tools", "route_tool_call")

TOOL_RULES = {"tools": {"rules": [{"models": ["echo-alias"], "tools": ["calculator", "shout"]}]}}
WEATHER = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


class ShoutTool:
    """A plugin offering an async tool, and recording the requests the backend gets."""

    def __init__(self) -> None:
        self.requests: list[ChatCompletionRequest] = []

    @hookimpl
    def register_tools(self, register: Callable[..., None]) -> None:
        async def shout(text: str) -> dict[str, str]:
            if text == "boom":
                raise RuntimeError("the shout tool exploded")
            return {"shouted": text.upper()}

        register("shout", shout, description="Shout a text", parameters={"type": "object"})

    @hookimpl
    def on_request(self, request: ChatCompletionRequest) -> None:
        self.requests.append(request)


@pytest.fixture(scope="module")
def recorder() -> ShoutTool:
    return ShoutTool()


@pytest.fixture(scope="module")
def tools_server(recorder: ShoutTool) -> Any:
    config = gateway_config(TOOL_RULES)
    with serve(config, production_manager(config, recorder)) as base_url:
        yield base_url


def call(name: str, arguments: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"call {name} {arguments}"}]


def expected(answer: str) -> dict[str, Any]:
    """Request fields for `ask` so the bench path (exactly max_tokens words) gives `answer` too."""
    return {"max_tokens": len(answer.split())}


@pytest.mark.parametrize("path", PATHS)
def test_server_tool_runs_and_its_result_makes_the_answer(tools_server: str, path: str) -> None:
    answer = "tool calculator said: 14"
    result = ask(
        tools_server, path, model="echo-alias", messages=call("calculator", '{"expression": "2 * (3 + 4)"}'),
        **expected(answer),
    )  # fmt: skip
    assert result.content == answer
    assert result.finish_reason == ("length" if path == "bench" else "stop")


def test_routed_calls_never_reach_the_client(tools_server: str) -> None:
    body = {"model": "echo-alias", "messages": call("shout", '{"text": "hey"}'), "stream": True}
    raw = httpx.post(f"{tools_server}/v1/chat/completions", json=body).text
    assert "tool_calls" not in raw and "call_echo" not in raw
    events = [json.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]
    streamed = "".join(event["choices"][0]["delta"].get("content", "") for event in events)
    assert streamed == 'tool shout said: {"shouted":"HEY"}'
    completion = client(tools_server).chat.completions.create(**{**body, "stream": False})
    message = completion.choices[0].message
    assert message.tool_calls is None
    assert message.content == 'tool shout said: {"shouted":"HEY"}'
    assert completion.usage is not None and completion.usage.completion_tokens > 1  # both rounds


@pytest.mark.parametrize(
    ("name", "arguments", "answer"),
    [
        ("calculator", '{"expression": "1 / 0"}', "error: ZeroDivisionError: division by zero"),
        ("calculator", '{"expression": "__import__(\'os\')"}', "error: ValueError: unsupported element"),
        ("calculator", '{"wrong": 1}', "error: TypeError:"),
        ("shout", '{"text": "boom"}', "error: RuntimeError: the shout tool exploded"),
        ("shout", "{not json", "error: the arguments are not valid JSON"),
    ],
)
@pytest.mark.parametrize("path", ["non-stream", "stream"])
def test_a_failing_tool_answers_with_its_error(
    tools_server: str, path: str, name: str, arguments: str, answer: str
) -> None:
    result = ask(tools_server, path, model="echo-alias", messages=call(name, arguments), max_tokens=40)
    assert result.content is not None
    assert result.content.startswith(f"tool {name} said: {answer}")
    assert result.finish_reason == "stop"


@pytest.mark.hooks("rewrite_request")
def test_client_tools_stay_the_clients_and_mix_with_server_tools(
    tools_server: str, recorder: ShoutTool
) -> None:
    chat = client(tools_server).chat.completions
    completion = chat.create(
        model="echo-alias", messages=call("weather", '{"city": "Oslo"}'), tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "weather"
    offered = [tool["function"]["name"] for tool in recorder.requests[-1].tools or ()]
    assert offered == ["weather", "calculator", "shout"]
    # A client tool named like a server tool is the client's.
    mine = {"type": "function", "function": {"name": "calculator"}}
    completion = chat.create(model="echo-alias", messages=call("calculator", "{}"), tools=[mine])
    assert completion.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("path", ["non-stream", "stream"])
def test_a_turn_calling_server_and_client_tools_runs_the_servers_and_asks_again(
    tools_server: str, path: str
) -> None:
    """The client is never handed a call to a tool it did not send."""
    both = [{"role": "user", "content": 'call weather {"city": "Oslo"}\ncall shout {"text": "hey"}'}]
    result = ask(tools_server, path, model="echo-alias", messages=both, tools=[WEATHER], max_tokens=20)
    # Echo, asked again after the shout result, answers it (a real model may call weather then).
    assert (result.content, result.finish_reason) == ('tool shout said: {"shouted":"HEY"}', "stop")


def test_parallel_client_calls_all_reach_the_client(tools_server: str) -> None:
    both = [{"role": "user", "content": 'call weather {"city": "Oslo"}\ncall weather {"city": "Rome"}'}]
    completion = client(tools_server).chat.completions.create(
        model="echo-alias", messages=both, tools=[WEATHER]
    )  # type: ignore[arg-type]
    calls = completion.choices[0].message.tool_calls or []
    assert [json.loads(call.function.arguments)["city"] for call in calls] == ["Oslo", "Rome"]
    assert len({call.id for call in calls}) == 2


@pytest.mark.hooks("rewrite_request")
def test_tools_only_for_configured_models_and_not_with_tool_choice_none(
    tools_server: str, recorder: ShoutTool
) -> None:
    chat = client(tools_server).chat.completions
    assert chat.create(model="system", messages=call("calculator", "{}")).choices[0].finish_reason == "stop"
    assert recorder.requests[-1].tools is None
    chat.create(model="echo", messages=call("weather", "{}"), tools=[WEATHER], tool_choice="none")
    assert [tool["function"]["name"] for tool in recorder.requests[-1].tools or ()] == ["weather"]


@pytest.mark.hooks("gateway_startup")
def test_config_naming_an_unknown_tool_fails_at_startup() -> None:
    config = gateway_config({"tools": {"rules": [{"tools": ["calculator", "teleport"]}]}})
    router = tools_plugin.make_plugin(config)
    assert router is not None
    registered: Mapping[str, Tool] = {"calculator": Tool("calculator", calculate)}
    with pytest.raises(ConfigError, match=r"rules\[0\]\.tools\[1\]: no tool named 'teleport'"):
        router.gateway_startup(tools=registered)


def test_a_tool_name_registered_twice_is_a_config_error() -> None:
    class Twice:
        @hookimpl
        def register_tools(self, register: Callable[..., None]) -> None:
            register("calculator", calculate)

    config = gateway_config()
    with pytest.raises(ConfigError, match="'calculator' is registered twice"):
        create_app(config, production_manager(config, Twice()))


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 * (3 + 4)", "14"),
        ("7 // 2 + 7 % 2", "4"),
        ("-2 ** 2", "-4"),
        ("1 / 4", "0.25"),
        ("2 ** 10", "1024"),
    ],
)
def test_calculator(expression: str, value: str) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["9 ** 9 ** 9", "10 ** 60 * 10 ** 60", "x + 1", "(1).real", "'a' * 3"])
def test_calculator_refuses_what_is_not_small_arithmetic(expression: str) -> None:
    with pytest.raises(ValueError):
        calculate(expression)


def test_tool_definition_is_the_openai_shape() -> None:
    definition = Tool("shout", calculate, "Shout", {"type": "object"}).definition()
    assert json.loads(json.dumps(definition)) == {
        "type": "function",
        "function": {"name": "shout", "parameters": {"type": "object"}, "description": "Shout"},
    }


def test_no_server_tool_is_offered_when_no_round_is_left_to_run_it(recorder: ShoutTool) -> None:
    config = gateway_config(TOOL_RULES)
    config = msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, max_tool_rounds=0))
    with serve(config, production_manager(config, recorder)) as base_url:
        chat = client(base_url).chat.completions
        completion = chat.create(model="echo-alias", messages=call("shout", '{"text": "hey"}'))  # type: ignore[arg-type]
        choice = completion.choices[0]
        assert (choice.finish_reason, choice.message.tool_calls) == ("stop", None)
        assert choice.message.content == 'call shout {"text": "hey"}'  # echo was offered no tool
        completion = chat.create(model="echo-alias", messages=call("weather", "{}"), tools=[WEATHER])  # type: ignore[arg-type]
        assert completion.choices[0].message.tool_calls[0].function.name == "weather"  # type: ignore[index]
