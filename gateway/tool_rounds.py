"""Server-side tool rounds: which of a finished turn's calls the server runs, and the
request for the last round, which may offer only the client's own tools."""

from __future__ import annotations

from gateway.assemble import ChoiceAccumulator
from gateway.backend import GenerationChunk
from gateway.context import RequestContext
from gateway.hooks import HookRunner
from gateway.protocol import ChatCompletionRequest, FunctionCall, Message, ToolCall, replace
from gateway.validation import named_tool_choice


async def route_tool_calls(
    held: list[GenerationChunk],
    request: ChatCompletionRequest,
    context: RequestContext,
    hooks: HookRunner,
) -> list[Message] | None:
    """Run the server's calls of a finished choice: the messages that ask the model
    again, or None when every call is the client's.

    In a turn that also calls client tools, only the server's calls stay in
    the history: the model, seeing their results, calls the client's tools
    again if it still needs them. A client never gets a call to a tool it
    did not send.
    """
    accumulator = ChoiceAccumulator(0, want_logprobs=False)
    for chunk in held:
        accumulator.add(chunk)
    if accumulator.finish_reason != "tool_calls":
        return None
    calls = [
        ToolCall(id=call.id, function=FunctionCall(call.function.name, call.function.arguments))
        for call in accumulator.choice().message.tool_calls or ()
    ]
    ran: list[ToolCall] = []
    results: list[Message] = []
    for call in calls:
        output = await hooks.first_result("route_tool_call", tool_call=call, request=request, context=context)
        if output is not None:
            ran.append(call)
            results.append(Message(role="tool", content=str(output), tool_call_id=call.id))
    return [Message(role="assistant", tool_calls=ran), *results] if ran else None


def tool_names(request: ChatCompletionRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.tools or ()]


def only_client_tools(request: ChatCompletionRequest, client_tools: frozenset[str]) -> ChatCompletionRequest:
    """The request without the tools plugins added, for the last round: a client must
    never get a call to a tool it did not send."""
    tools = [tool for tool in request.tools or () if tool["function"]["name"] in client_tools]
    if len(tools) == len(request.tools or ()):
        return request
    choice = request.tool_choice
    named = named_tool_choice(choice)
    if (named is not None and named not in client_tools) or (choice == "required" and not tools):
        choice = None
    return replace(request, tools=tools or None, tool_choice=choice)
