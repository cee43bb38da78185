"""The generic tool-call format, for models whose chat template ignores `tools`.

Such a template renders the same prompt with and without tools, so the model
would never hear of them. Instead the backend describes them in the system
message and asks for calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(the format most open models were trained on). Earlier turns are rewritten to
match: an assistant's calls become such blocks in its content, and tool results
become a user message of `<tool_response>` blocks, which every template renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_tool_support",
        "description": "probe",
        "parameters": {"type": "object", "properties": {}},
    },
}
_PROBE_MESSAGES = [{"role": "user", "content": "probe"}]


def template_takes_tools(render: Callable[[list[dict[str, Any]], Any], str]) -> bool:
    """Whether the chat template shows tools (its prompt changes when tools are given).
    A template that fails on the probe is taken to handle tools itself."""
    try:
        return render(_PROBE_MESSAGES, [_PROBE_TOOL]) != render(_PROBE_MESSAGES, None)
    except Exception:  # noqa: BLE001 - any template failure: leave the template in charge
        return True


def describe_tools(tools: Sequence[dict[str, Any]]) -> str:
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "# Tools\n\nYou may call one or more of the functions listed in <tools></tools>.\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "To call a function, reply with a JSON object holding its name and arguments inside "
        '<tool_call></tool_call> tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call>"
    )


def with_generic_tools(
    messages: list[dict[str, Any]], tools: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Template messages with the tools described in the system message and past calls
    and results written out as text."""
    description = describe_tools(tools)
    out: list[dict[str, Any]] = []
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        out.append(
            {**first, "content": f"{first['content']}\n\n{description}" if first["content"] else description}
        )
        messages = messages[1:]
    else:
        out.append({"role": "system", "content": description})
    for message in messages:
        if message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out[-1]["role"] == "user" and out[-1].get("_tool_results"):
                out[-1] = {**out[-1], "content": out[-1]["content"] + "\n" + block}
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        if message.get("tool_calls"):
            calls = [
                "<tool_call>\n"
                + json.dumps(
                    {"name": call["function"]["name"], "arguments": call["function"]["arguments"]},
                    ensure_ascii=False,
                )
                + "\n</tool_call>"
                for call in message["tool_calls"]
            ]
            text = "\n".join(filter(None, [message.get("content") or "", *calls]))
            message = {key: value for key, value in message.items() if key != "tool_calls"}
            message["content"] = text
        out.append(message)
    return [{key: value for key, value in m.items() if key != "_tool_results"} for m in out]
