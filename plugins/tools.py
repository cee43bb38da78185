"""Tool routing: server-side tools for the models config names.

    [plugins.settings.tools]
    timeout_s = 30                    # per call

    [[plugins.settings.tools.rules]]
    models = ["echo"]                 # ids or aliases; "*" matches every model
    tools = ["calculator"]            # names offered through the `register_tools` hook

`rewrite_request` adds the definitions of a model's tools to `request.tools`;
`route_tool_call` runs a call to one of them and returns its result as text,
and the gateway asks the model again. The client sees neither the call nor the
result, only the final answer. Tools the client sent itself stay the client's
(a client tool with the same name wins). A tool that raises, times out or gets
bad arguments answers with an error text the model can read; nothing crashes.
No tools are added when `tool_choice` is "none" or `n` > 1 (the gateway routes
calls only for single-choice requests).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import msgspec
import structlog

from gateway import (
    ChatCompletionRequest,
    CompletionRequest,
    ConfigError,
    EmbeddingRequest,
    GatewayConfig,
    RequestContext,
    Tool,
    ToolCall,
    hookimpl,
    replace,
)

log = structlog.get_logger("plugins.tools")


class RuleSettings(msgspec.Struct, forbid_unknown_fields=True):
    tools: list[str]
    models: list[str] = msgspec.field(default_factory=lambda: ["*"])


class ToolsSettings(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[RuleSettings] = []
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class ToolRouter:
    def __init__(self, settings: ToolsSettings, model_id: Callable[[str], str | None]) -> None:
        self.settings = settings
        self.model_id = model_id
        self.by_model: dict[str, list[Tool]] = {}  # model id ("*": every model) -> its tools
        self.offers: dict[str, tuple[dict[str, Tool], list[dict[str, Any]]]] = {}  # model id -> offer

    @hookimpl
    def gateway_startup(self, tools: Mapping[str, Tool]) -> None:
        """Tools are known once every plugin has registered; check the config against them."""
        self.by_model.clear()
        self.offers.clear()
        for index, rule in enumerate(self.settings.rules):
            for position, name in enumerate(rule.tools):
                if name not in tools:
                    known = ", ".join(sorted(tools)) or "none"
                    raise ConfigError(
                        f"plugins.settings.tools.rules[{index}].tools[{position}]: "
                        f"no tool named '{name}' (registered: {known})"
                    )
            for model in rule.models:
                offered = self.by_model.setdefault(self.model_id(model) or model, [])
                offered.extend(tools[name] for name in rule.tools if tools[name] not in offered)

    @hookimpl
    def rewrite_request(
        self, request: ChatCompletionRequest, context: RequestContext
    ) -> ChatCompletionRequest | None:
        if request.tool_choice == "none" or request.choice_count > 1:
            return None
        if isinstance(request, CompletionRequest | EmbeddingRequest):  # raw prompts: no chat, no tools
            return None
        tools, definitions = self.offer_for(self.model_id(request.model) or request.model)
        if request.tools:
            client_names = {tool["function"]["name"] for tool in request.tools}
            tools = {name: tool for name, tool in tools.items() if name not in client_names}
            definitions = [tool.definition() for tool in tools.values()]
        if not tools:
            return None
        context.state["tools"] = tools
        return replace(request, tools=[*(request.tools or ()), *definitions])

    def offer_for(self, model: str) -> tuple[dict[str, Tool], list[dict[str, Any]]]:
        """A model's tools by name, and their definitions: worked out once per model."""
        offer = self.offers.get(model)
        if offer is None:
            tools = {tool.name: tool for tool in (*self.by_model.get("*", ()), *self.by_model.get(model, ()))}
            offer = self.offers[model] = (tools, [tool.definition() for tool in tools.values()])
        return offer

    @hookimpl
    async def route_tool_call(self, tool_call: ToolCall, context: RequestContext) -> str | None:
        tool = context.state.get("tools", {}).get(tool_call.function.name)
        if tool is None:
            return None  # not ours: the client's tool
        try:
            arguments = msgspec.json.decode(tool_call.function.arguments or "{}")
        except msgspec.DecodeError as error:
            return f"error: the arguments are not valid JSON: {error}"
        if not isinstance(arguments, dict):
            return "error: the arguments must be a JSON object"
        return await run_tool(tool, arguments, self.settings.timeout_s)


async def run_tool(tool: Tool, arguments: dict[str, Any], timeout_s: float) -> str:
    """The tool's result as text; any failure as an error text for the model to read."""
    try:
        if inspect.iscoroutinefunction(tool.function):
            result = await asyncio.wait_for(tool.function(**arguments), timeout_s)
        else:
            result = await asyncio.wait_for(asyncio.to_thread(tool.function, **arguments), timeout_s)
        return result if isinstance(result, str) else msgspec.json.encode(result).decode()
    except TimeoutError:
        log.warning("tool timed out", tool=tool.name, timeout_s=timeout_s)
        return f"error: the tool '{tool.name}' did not answer within {timeout_s:g}s"
    except Exception as error:
        log.warning("tool failed", tool=tool.name, exc_info=error)
        return f"error: {type(error).__name__}: {error}"


def make_plugin(config: GatewayConfig) -> ToolRouter | None:
    settings = config.plugins.settings_for("tools", ToolsSettings)
    return ToolRouter(settings, config.model_id) if settings.rules else None
