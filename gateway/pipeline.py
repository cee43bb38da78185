"""The endpoint-neutral pipeline: hooks around a backend, independent of HTTP and of
any one API's wire format.

Every endpoint translates its body into the internal `ChatCompletionRequest` and
hands it here. Three stages:

- `prepare`: authenticate -> normalise -> rewrite_request -> resolve model ->
  allowed-models check -> model defaults -> field support check -> load backend
  -> backend.validate -> on_request. It takes the model lease.
- `generate`: backend events through `on_chunk`, with server-side tool rounds
  (route_tool_call) folded in. It gives the lease back however it ends.
- finish: `complete` / `stream` collect the chunks into a `ChatCompletion` (what
  `on_response` sees on every endpoint) and call `on_response`; any failure
  reaches `on_error` through `fail`, from one place.

An endpoint writes the answer in its own format: a `StreamWriter` turns the
chunks (after `on_chunk`) into its stream's bytes.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gateway.assemble import ChoiceAccumulator, to_usage
from gateway.backend import (
    Backend,
    GenerationChunk,
    GenerationEnd,
    GenerationOptions,
    GenerationStats,
    TokenUsage,
)
from gateway.config import GatewayConfig
from gateway.context import Identity, RequestContext
from gateway.errors import (
    BackendFailed,
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    PermissionDenied,
    UnsupportedField,
)
from gateway.hooks import HookRunner
from gateway.lifecycle import cut_error, cut_reason
from gateway.metrics import Metrics
from gateway.prompts import Embeddings
from gateway.protocol import ChatCompletionRequest, replace
from gateway.registry import BackendRegistry, Lease, ModelEntry
from gateway.responses import ChatCompletion, Choice, Usage
from gateway.tool_rounds import only_client_tools, route_tool_calls, tool_names
from gateway.validation import apply_model_config, check_backend_support, normalize


@dataclass
class PreparedRequest:
    """A request ready to generate; it holds `lease` until generation ends, and keeps
    the hooks it started with (a config reload mid-stream must not change them)."""

    request: ChatCompletionRequest
    entry: ModelEntry
    lease: Lease
    response_id: str
    created: int
    hooks: HookRunner
    client_tools: frozenset[str]  # names of the tools the client sent (plugins may add more)

    @property
    def backend(self) -> Backend:
        return self.lease.backend

    def completion(self, choices: list[Choice], usage: Usage) -> ChatCompletion:
        return ChatCompletion(self.response_id, self.created, self.entry.id, choices, usage)


class Outcome(NamedTuple):
    """A finished non-streamed answer: what `on_response` saw, and the bench figures."""

    completion: ChatCompletion
    stats: GenerationStats | None
    # messages endpoint: each choice's matched stop string (`GenerationChunk.stop_sequence`)
    stop_sequences: tuple[str | None, ...] = ()


class StreamWriter(Protocol):
    """An endpoint's stream format: bytes for each chunk, the end and a failure.

    `chunk` may return b"" to send nothing yet (say, a writer that opens its
    stream only with the first real output)."""

    def chunk(self, chunk: GenerationChunk) -> bytes: ...

    def end(self, completion: ChatCompletion) -> bytes:
        """The closing bytes, once `on_response` has seen `completion`."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """The event that ends a stream that failed after it started."""
        ...


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        registry: BackendRegistry,
        hooks: HookRunner,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.hooks = hooks
        self.metrics = metrics

    async def prepare(
        self,
        request: ChatCompletionRequest,
        context: RequestContext,
        authorize: Callable[[RequestContext], None] | None = None,
    ) -> PreparedRequest:
        """The request checked, rewritten and resolved, holding its model's lease.

        `authorize`: the endpoint's own check once the caller is known (e.g. that a
        continued response is theirs); it raises a `GatewayError` to refuse."""
        context.model = request.model
        context.stream = request.stream
        hooks = self.hooks  # `has` checks skip the hook machinery where no plugin listens
        await self.identify(context, request.model, hooks)
        if authorize is not None:
            authorize(context)
        request = normalize(request)
        client_tools = frozenset(tool_names(request))  # checked by `normalize`
        if hooks.has("rewrite_request"):
            rewritten = await hooks.chain("rewrite_request", "request", request, context=context)
            if rewritten is not request:  # checked again only where the rewrite changed it
                request = normalize(rewritten, before=request)
        entry = self.registry.resolve(request.model, lambda e: _visible(context.identity, e))
        context.model, context.backend = entry.id, entry.config.backend
        _check_allowed(context.identity, request.model, entry.id)
        request = apply_model_config(request, entry.id, entry.config)
        check_backend_support(request, self.registry.factory(entry))
        lease = await self.registry.acquire(entry)
        try:
            lease.backend.validate(request)
            if hooks.has("on_request"):
                await hooks.call_all("on_request", request=request, context=context)
        except BaseException:
            lease.release()
            raise
        response_id = "chatcmpl-" + context.request_id.removeprefix("req_")
        return PreparedRequest(request, entry, lease, response_id, int(time.time()), hooks, client_tools)

    async def identify(self, context: RequestContext, model: str, hooks: HookRunner | None = None) -> None:
        """Run `authenticate` (when a plugin listens): sets `context.identity` or raises."""
        hooks = hooks or self.hooks
        if hooks.has("authenticate"):
            context.identity = await hooks.first_result(
                "authenticate", headers=context.headers, model=model, context=context
            )

    # --- generation, shared by every endpoint ---------------------------------------

    async def generate(
        self, prepared: PreparedRequest, context: RequestContext, options: GenerationOptions
    ) -> AsyncIterator[GenerationChunk | GenerationEnd]:
        """Backend events after `on_chunk`, with server-side tool rounds folded in.

        Tool-call deltas are held back until the choice finishes when a plugin
        may route tool calls: calls it runs never reach the client, the model is
        asked again with their results, and usage is summed over rounds. The
        lease is released when generation ends, however it ends.
        """
        try:
            request, hooks = prepared.request, prepared.hooks
            routing = hooks.has("route_tool_call") and request.choice_count == 1
            chunk_hooks = hooks.has("on_chunk")
            usage = TokenUsage(0, 0)
            stats: GenerationStats | None = None
            rounds = self.config.server.max_tool_rounds + 1
            # Inter-token latency: the gaps between choice 0's chunks (a chunk may hold several
            # tokens when a stop string or a tool call is held back, as a client sees it).
            gap = self.metrics.observe_token_gap(prepared.entry.id) if self.metrics is not None else None
            last = 0.0
            for round_number in range(1, rounds + 1):
                if routing and round_number == rounds:  # no round left to run a server tool in
                    request, routing = only_client_tools(request, prepared.client_tools), False
                held: list[GenerationChunk] = []
                end: GenerationEnd | None = None
                async with aclosing(prepared.backend.generate(request, options)) as events:
                    async for event in events:
                        if isinstance(event, GenerationEnd):
                            end = event
                            break
                        chunk = (
                            hooks.chain_sync("on_chunk", "chunk", event, context=context)
                            if chunk_hooks
                            else event
                        )
                        if chunk is not event and _is_empty(chunk):
                            continue  # a plugin holds this piece back (e.g. to see a whole word)
                        if context.timings.first_token is None:
                            context.timings.first_token = last = time.perf_counter()
                        elif gap is not None and chunk.choice == 0:
                            now = time.perf_counter()
                            gap(now - last)
                            last = now
                        if routing and (chunk.tool_calls or held):
                            held.append(chunk)
                            continue
                        yield chunk
                if end is None:
                    raise BackendFailed(f"backend '{prepared.backend.kind}' ended without a result")
                usage = _add_usage(usage, end.usage)
                stats = end.stats
                results = await route_tool_calls(held, request, context, hooks) if held else None
                if results is None:
                    for chunk in held:
                        yield chunk
                    break
                request = replace(request, messages=[*request.messages, *results])
            yield GenerationEnd(usage=usage, stats=stats)
        finally:
            prepared.lease.release()

    # --- finish: the answer, on_response / on_error ----------------------------------

    async def complete(
        self, prepared: PreparedRequest, context: RequestContext, options: GenerationOptions
    ) -> Outcome:
        """The whole answer, after `on_response`."""
        want_logprobs = bool(prepared.request.logprobs)
        accumulators = [
            ChoiceAccumulator(index, want_logprobs) for index in range(prepared.request.choice_count)
        ]
        end: GenerationEnd | None = None
        stops: list[str | None] = [None] * len(accumulators)  # messages endpoint: the matched stops
        async with aclosing(self.generate(prepared, context, options)) as events:
            async for event in events:
                if isinstance(event, GenerationEnd):
                    end = event
                else:
                    accumulators[event.choice].add(event)
                    if event.stop_sequence is not None:  # messages endpoint
                        stops[event.choice] = event.stop_sequence
        assert end is not None
        completion = prepared.completion([a.choice() for a in accumulators], to_usage(end.usage))
        await self._finish(prepared, completion, context)
        return Outcome(completion, end.stats, tuple(stops))

    async def count_tokens(self, request: ChatCompletionRequest, context: RequestContext) -> int:
        """The prompt's token count, as the backend would see it (messages endpoint: count_tokens).

        Prepared like a generation (hooks, model, lease) so the count is of the prompt
        the backend would render; a backend without `count_tokens` answers a 400."""
        prepared = await self.prepare(request, context)
        try:
            counter = getattr(prepared.backend, "count_tokens", None)
            if counter is None:
                raise InvalidRequest(
                    f"the '{prepared.backend.kind}' backend cannot count tokens", param="model"
                )
            return int(await counter(prepared.request))
        finally:
            prepared.lease.release()

    def stream(
        self, prepared: PreparedRequest, context: RequestContext, writer: StreamWriter
    ) -> AsyncIterator[bytes]:
        """The stream's bytes, as `writer` formats them; the lease is given back even if
        the stream is never iterated."""
        events = self._stream(prepared, context, writer)
        weakref.finalize(events, prepared.lease.release)
        return events

    async def _stream(
        self, prepared: PreparedRequest, context: RequestContext, writer: StreamWriter
    ) -> AsyncIterator[bytes]:
        """An error before the first bytes is raised (so it gets its HTTP status);
        after them, the stream ends with the writer's error event."""
        request = prepared.request
        accumulators = [
            ChoiceAccumulator(index, bool(request.logprobs)) for index in range(request.choice_count)
        ]
        started = False
        usage = None
        options = GenerationOptions(request_id=context.request_id)
        try:
            async with aclosing(self.generate(prepared, context, options)) as events:
                async for event in events:
                    if isinstance(event, GenerationEnd):
                        usage = to_usage(event.usage)
                        continue
                    accumulators[event.choice].add(event)
                    data = writer.chunk(event)
                    if data:
                        started = True
                        yield data
            assert usage is not None
            completion = prepared.completion([a.choice() for a in accumulators], usage)
            await self._finish(
                prepared, completion, context
            )  # inside `try`: a failing hook ends the stream cleanly
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away, or the gateway ended the request (shutdown, request
            # timeout: the middleware tells the client); the backend generator is closed.
            reason = cut_reason()
            cut = cut_error(reason) if reason else ClientDisconnected("the client disconnected")
            context.status_code = cut.status_code
            await self.fail(cut, context)
            raise
        except Exception as error:
            if not started:
                raise  # nothing sent yet: the route answers with a plain HTTP error
            failure = as_gateway_error(error)
            context.status_code = failure.status_code
            await self.fail(error, context)
            yield writer.error(failure)
            return
        yield writer.end(completion)

    async def embed(
        self, prepared: PreparedRequest, context: RequestContext, options: GenerationOptions
    ) -> Embeddings:
        """An embedding request's vectors (the second kind of work, beside `generate`),
        after `on_response`, which sees a completion without choices whose usage counts
        the input tokens. `on_chunk` never runs: nothing is generated."""
        try:
            embed = getattr(prepared.backend, "embed", None)
            if embed is None:
                raise UnsupportedField("input", prepared.backend.kind, "it computes no embeddings")
            result: Embeddings = await embed(prepared.request, options)
        finally:
            prepared.lease.release()
        usage = to_usage(TokenUsage(prompt_tokens=result.prompt_tokens, completion_tokens=0))
        await self._finish(prepared, prepared.completion([], usage), context)
        return result

    async def _finish(
        self, prepared: PreparedRequest, response: ChatCompletion, context: RequestContext
    ) -> None:
        context.timings.finished = time.perf_counter()
        await prepared.hooks.call_all("on_response", response=response, context=context)
        if self.metrics is not None:  # called directly: a hook here would cost every request more
            self.metrics.on_response(response, context)

    async def fail(self, error: Exception, context: RequestContext) -> None:
        """Tell `on_error` observers; one that raises is logged, never replaces `error`."""
        context.timings.finished = time.perf_counter()
        if self.metrics is not None:
            self.metrics.on_error(error, context)
        await self.hooks.notify("on_error", error=error, context=context)


def as_gateway_error(error: Exception) -> GatewayError:
    """What a client is told of a failure after its stream has started."""
    return error if isinstance(error, GatewayError) else BackendFailed(str(error) or type(error).__name__)


def may_use(identity: Identity | None, model_id: str, *names: str) -> bool:
    """Whether the caller's identity allows the model, by its id or by any of `names` (aliases)."""
    if identity is None or "*" in identity.allowed_models:
        return True
    return model_id in identity.allowed_models or any(name in identity.allowed_models for name in names)


def _visible(identity: Identity | None, entry: ModelEntry) -> bool:
    """Whether a 404 may list this model to this caller."""
    return may_use(identity, entry.id, *entry.config.aliases)


def _check_allowed(identity: Identity | None, name: str, model_id: str) -> None:
    """403 unless the caller's identity allows the model, by id or by the alias it used."""
    if not may_use(identity, model_id, name):
        raise PermissionDenied(f"This API key may not use the model '{name}'", param="model")


def _is_empty(chunk: GenerationChunk) -> bool:
    return not (chunk.text or chunk.reasoning or chunk.tool_calls or chunk.logprobs or chunk.finish_reason)


def _add_usage(total: TokenUsage, more: TokenUsage) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
        reasoning_tokens=total.reasoning_tokens + more.reasoning_tokens,
        accepted_prediction_tokens=total.accepted_prediction_tokens + more.accepted_prediction_tokens,
        rejected_prediction_tokens=total.rejected_prediction_tokens + more.rejected_prediction_tokens,
    )
