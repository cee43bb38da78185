"""Every hook a plugin may implement, grouped by when it runs.

Conventions, for all hooks:
- Arguments are passed by name; an implementation may accept any subset of them,
  so new arguments can be added later without breaking plugins.
- "Async allowed" hooks may be `def` or `async def`; the gateway awaits results
  (`gateway.hooks`). The others must be plain `def`.
- Per-request hooks run in plugin order: the most recently registered plugin
  first, `tryfirst=True`/`trylast=True` implementations before/after the rest.
  Built-in plugins are registered first, so user plugins run before them.
- A plugin that raises a `gateway.GatewayError` sends that error to the client;
  any other exception becomes a 500 `plugin_error` naming the plugin and hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from gateway.backend import GenerationChunk
    from gateway.config import GatewayConfig
    from gateway.context import Identity, RequestContext
    from gateway.protocol import ChatCompletionRequest, ToolCall
    from gateway.responses import ChatCompletion
    from gateway.tools import Tool

PROJECT = "gateway"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- start-up and shut-down -----------------------------------------------------------


@hookspec
def register_backends(register: Callable[[str, Callable[..., Any]], None]) -> None:
    """Register backend kinds, for use as `backend = "<kind>"` in config.toml.

    :param register: call `register(kind, factory)`; `factory(spec: ModelSpec)`
        returns a `gateway.Backend` for one configured model.
    :return: nothing.

    Called once at app creation, for every plugin. Sync only.
    """


@hookspec
def register_tools(register: Callable[..., None]) -> None:
    """Offer server-side tools, which the built-in `tools` plugin gives to models.

    :param register: call `register(name, function, description="", parameters=None)`;
        `function(**arguments)` may be `def` (run in a worker thread) or `async def`
        and returns the result: text, or anything JSON-encodable. `parameters`
        is the JSON schema of its arguments (default: none).
    :return: nothing.

    Called once at app creation, for every plugin. Sync only. A name registered
    twice is a `ConfigError`. Which model may use which tool is config
    (`[plugins.settings.tools]`), never the tool's own decision.
    """


@hookspec
def gateway_startup(config: GatewayConfig, tools: Mapping[str, Tool]) -> None:
    """The server is starting, before the first request; or a config reload built
    this plugin anew.

    :param config: the loaded gateway config.
    :param tools: every tool offered through `register_tools`, by name.
    :return: nothing. Raise `ConfigError` to refuse the config.

    Called for every plugin. Async allowed.
    """


@hookspec
def gateway_shutdown() -> None:
    """The server is stopping, after the last request; or a config reload replaced
    this plugin.

    :return: nothing.

    Called for every plugin. Async allowed.
    """


# --- per request, in the order they run -----------------------------------------------


@hookspec(firstresult=True)
def authenticate(headers: dict[str, str], model: str, context: RequestContext) -> Identity | None:
    """Decide who is calling.

    :param headers: the HTTP request headers, lower-cased names.
    :param model: the requested model id, as the client sent it ("" when
        listing models: `GET /v1/models` runs this hook too).
    :param context: the request's context (id, endpoint, plugin state).
    :return: an `Identity` to accept the caller, or None to leave the decision to
        the next plugin. Raise `AuthenticationFailed` (401), `PermissionDenied`
        (403) or `RateLimited` (429) to reject.

    First result wins: later plugins are not called. With no result the request is
    anonymous. Async allowed.
    """


@hookspec
def rewrite_request(request: ChatCompletionRequest, context: RequestContext) -> ChatCompletionRequest | None:
    """Rewrite the request before it reaches the backend.

    :param request: the request as left by the previous plugin (requests are
        values: build a new one with `gateway.replace(request, field=...)`). On
        every endpoint it is the chat request the endpoint's body was translated
        into (`context.endpoint` says which; docs/plugins.md shows what each holds).
    :param context: the request's context.
    :return: the new request, or None to keep it unchanged.

    Chained: each plugin sees the previous plugin's result. Async allowed.
    """


@hookspec
def on_request(request: ChatCompletionRequest, context: RequestContext) -> None:
    """Observe a request that passed authentication and rewriting.

    :param request: the final request sent to the backend.
    :param context: the request's context (`context.identity` is set).
    :return: nothing.

    Called for every plugin. Async allowed.
    """


@hookspec
def route_tool_call(
    tool_call: ToolCall, request: ChatCompletionRequest, context: RequestContext
) -> str | None:
    """Run a tool call on the server instead of returning it to the client.

    :param tool_call: the call the model made (`tool_call.function.name`,
        `tool_call.function.arguments` as a JSON string).
    :param request: the request that produced the call.
    :param context: the request's context.
    :return: the tool's result as text, appended as a `tool` message before the
        gateway asks the model again; None if this plugin does not own the tool.

    First result wins. When no plugin owns any call of a turn, the calls go to
    the client; when plugins own some, those run and the model is asked again.
    The last of `server.max_tool_rounds` rounds offers only the client's tools.
    Async allowed.
    """


@hookspec
def on_chunk(chunk: GenerationChunk, context: RequestContext) -> GenerationChunk | None:
    """See or change each piece of output, streamed or not.

    :param chunk: the next `GenerationChunk` of one choice (text, reasoning,
        tool-call and logprob deltas, finish reason).
    :param context: the request's context.
    :return: a replacement chunk, or None to keep it. A replacement that carries
        nothing is not sent, so a plugin may hold text back and release it later.

    Chained, for every chunk, in stream, non-stream and bench mode alike (a
    non-streamed answer is assembled from the same chunks). Sync only: it runs
    on the hot path.
    """


@hookspec
def on_response(response: ChatCompletion, context: RequestContext) -> None:
    """Observe the finished answer.

    :param response: the whole `ChatCompletion` (for a stream, assembled from its
        chunks), with usage, whatever API the client spoke (an embedding request's
        has no choices).
    :param context: the request's context (timings in `context.timings`).
    :return: nothing.

    Called for every plugin, once per successful request. Async allowed. Raising
    turns the answer into an error (for a stream, an error event instead of `[DONE]`).
    """


@hookspec
def on_error(error: Exception, context: RequestContext) -> None:
    """Observe a failed request.

    :param error: the exception; a `GatewayError` carries the status sent.
    :param context: the request's context.
    :return: nothing.

    Called for every plugin, once per failed request. Async allowed. An
    implementation that raises is logged and skipped: it never replaces `error`.
    """
