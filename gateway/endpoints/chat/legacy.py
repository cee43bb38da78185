"""Answers to requests that used the deprecated `functions` / `function_call`: the call
goes back as `message.function_call` (one call, as that API had) with
`finish_reason: "function_call"`, the shape such clients parse."""

from __future__ import annotations

from msgspec import UNSET, structs

from gateway.endpoints.chat.wire import ChunkChoice, FunctionDelta
from gateway.responses import ChatCompletion, Choice


def legacy_completion(completion: ChatCompletion) -> ChatCompletion:
    return structs.replace(completion, choices=[_legacy_choice(choice) for choice in completion.choices])


def _legacy_choice(choice: Choice) -> Choice:
    calls = choice.message.tool_calls
    if not calls:
        return choice
    message = structs.replace(choice.message, tool_calls=UNSET, function_call=calls[0].function)
    return structs.replace(choice, message=message, finish_reason="function_call")


def legacy_chunk_choice(choice: ChunkChoice) -> ChunkChoice:
    delta = choice.delta
    finish = "function_call" if choice.finish_reason == "tool_calls" else choice.finish_reason
    if delta.tool_calls is UNSET:
        return choice if finish == choice.finish_reason else structs.replace(choice, finish_reason=finish)
    first = [call for call in delta.tool_calls if call.index == 0]  # that API made one call a turn
    function = first[0].function if first and first[0].function is not UNSET else FunctionDelta()
    delta = structs.replace(delta, tool_calls=UNSET, function_call=function)
    return structs.replace(choice, delta=delta, finish_reason=finish)
