"""A config-module plugin that records what it sees (module state: tests clear it)."""

from gateway import ChatCompletionRequest, RequestContext, hookimpl

seen: list[list[str]] = []


@hookimpl
def rewrite_request(request: ChatCompletionRequest, context: RequestContext) -> None:
    seen.append([message.role for message in request.messages])
