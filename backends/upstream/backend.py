"""The `openai` backend: forwards a model's requests to OpenAI-compatible servers.

Every upstream request is streamed (`stream: true` with usage) whatever the
client asked for, and each upstream chunk is turned into gateway events as it
arrives, so the gateway re-emits it (hooks included) without buffering.

An attempt may fail over to another upstream until the upstream's response
headers arrive (connect error, timeout, 5xx); after that the answer has
started and an error ends it. Closing the generator closes the upstream
response, so the upstream stops generating for a client that left.

Bench mode measures ttft and throughput here, but cannot ban end-of-sequence
or bypass the upstream's prefix cache: the upstream answers a plain request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
import structlog

from backends.upstream.errors import (
    UpstreamFailed,
    UpstreamUnreachable,
    rejected,
    server_error_message,
)
from backends.upstream.options import UpstreamOptions, base_urls, load_options
from backends.upstream.pool import HealthChecker, Upstream, UpstreamPool
from backends.upstream.sse import sse_data
from backends.upstream.stream import UpstreamStream
from backends.upstream.wire import completion_body, embedding_body, read_embeddings, request_body
from gateway import (
    BackendFailed,
    BackendUnavailable,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    ModelSpec,
    wall_clock_stats,
)

log = structlog.get_logger("backends.upstream")

# Compressed event streams would be buffered by the decompressor: ask for none.
_STREAM_HEADERS = {"accept": "text/event-stream", "accept-encoding": "identity"}
_JSON_HEADERS = {"accept": "application/json", "content-type": "application/json"}


class _Retry(Exception):
    """This upstream failed before answering; another may be tried."""

    def __init__(self, error: UpstreamFailed) -> None:
        super().__init__(error.message)
        self.error = error


class OpenAIUpstreamBackend:
    kind = "openai"
    # The upstream decides what it supports; a field it refuses comes back as its 400.
    # Legacy completions go to `{url}/completions`, embeddings to `{url}/embeddings`.
    supported_fields = frozenset({*CompletionRequest.__struct_fields__, *EmbeddingRequest.__struct_fields__})

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options: UpstreamOptions = load_options(spec)
        self.model = self.options.model or spec.id
        self.pool = UpstreamPool(base_urls(self.options), self.model)
        self._client: httpx.AsyncClient | None = None
        self._health: HealthChecker | None = None

    async def load(self) -> None:
        options = self.options
        headers = {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(options.timeout_s, read=None),  # first byte: asyncio.timeout below
            limits=httpx.Limits(
                max_connections=options.max_connections, max_keepalive_connections=options.max_connections
            ),
        )
        if options.health_check_interval_s > 0:
            self._health = HealthChecker(
                self.pool, self._client, options.health_check_interval_s, options.timeout_s
            )
            self._health.start()

    async def unload(self) -> None:
        if self._health is not None:
            await self._health.stop()
            self._health = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def validate(self, request: ChatCompletionRequest) -> None:
        return None

    async def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        legacy = isinstance(request, CompletionRequest)
        body = completion_body(request, self.model) if legacy else request_body(request, self.model)
        started = time.perf_counter()
        path = "/completions" if legacy else "/chat/completions"
        upstream, response = await self._connect(body, options.request_id, path)
        try:
            async with aclosing(self._events(response, request, options, started)) as events:
                async for event in events:
                    yield event
        finally:
            await response.aclose()
            upstream.outstanding -= 1

    async def embed(self, request: EmbeddingRequest, options: GenerationOptions) -> Embeddings:
        """Forwarded to `{url}/embeddings` (as floats; the endpoint encodes base64 itself)."""
        body = embedding_body(request, self.model)
        upstream, response = await self._connect(body, options.request_id, "/embeddings", stream=False)
        try:
            answer = await response.aread()
        finally:
            await response.aclose()
            upstream.outstanding -= 1
        return read_embeddings(answer, len(request.input))

    async def _connect(
        self, body: bytes, request_id: str, path: str, stream: bool = True
    ) -> tuple[Upstream, httpx.Response]:
        """The first upstream's 200 response, failing over to the next until headers arrive.

        The upstream's `outstanding` count is left raised: the caller lowers it
        once it has read the response."""
        client = self._client
        if client is None:
            raise BackendUnavailable(f"model '{self.spec.id}' is not loaded")
        tried: list[Upstream] = []
        failure: UpstreamFailed = UpstreamUnreachable(f"no healthy upstream for model '{self.spec.id}'")
        while (upstream := self.pool.pick(tried)) is not None:
            tried.append(upstream)
            upstream.outstanding += 1
            try:
                return upstream, await self._open(client, upstream, body, request_id, path, stream)
            except _Retry as retry:
                failure = retry.error
                upstream.outstanding -= 1
            except BaseException:
                upstream.outstanding -= 1
                raise
        raise failure

    async def _open(
        self,
        client: httpx.AsyncClient,
        upstream: Upstream,
        body: bytes,
        request_id: str,
        path: str = "/chat/completions",
        stream: bool = True,
    ) -> httpx.Response:
        """The upstream's 200 response, its stream unread; raises `_Retry` or a passed-through 4xx.

        Our request id goes along as `x-request-id`, so the tiers' logs can be joined.
        """
        base = _STREAM_HEADERS if stream else _JSON_HEADERS
        headers = {**base, "x-request-id": request_id} if request_id else base
        outgoing = client.build_request("POST", f"{upstream.url}{path}", content=body, headers=headers)
        try:
            async with asyncio.timeout(self.options.timeout_s):
                response = await client.send(outgoing, stream=True)
                if response.status_code == 200 and (not stream or _is_event_stream(response)):
                    return response
                error_body = await response.aread()
                await response.aclose()
        except (httpx.TransportError, TimeoutError) as error:
            reason = type(error).__name__
            self._attempt_failed(upstream, reason)
            raise _Retry(UpstreamUnreachable(f"the upstream could not be reached ({reason})")) from None
        if response.status_code == 200:  # the same on every upstream of this model: not retried
            kind = response.headers.get("content-type", "no content type")
            raise UpstreamFailed(f"the upstream answered with {kind}, not an event stream")
        if 400 <= response.status_code < 500:
            raise rejected(response.status_code, error_body, dict(response.headers))
        reason = server_error_message(response.status_code, error_body)
        self._attempt_failed(upstream, f"HTTP {response.status_code}")
        raise _Retry(UpstreamFailed(f"the upstream failed: {reason}"))

    def _attempt_failed(self, upstream: Upstream, reason: str) -> None:
        log.warning("upstream attempt failed", model=self.spec.id, upstream=upstream.url, reason=reason)
        if self._health is not None:  # without health checks nothing would mark it healthy again
            self.pool.set_health(upstream, False, reason)

    async def _events(
        self,
        response: httpx.Response,
        request: ChatCompletionRequest,
        options: GenerationOptions,
        started: float,
    ) -> AsyncIterator[GenerationEvent]:
        """Gateway events for one upstream stream, each yielded as its chunk arrives."""
        stream = UpstreamStream(request.choice_count, legacy=isinstance(request, CompletionRequest))
        try:
            async with aclosing(sse_data(response.aiter_lines())) as events:
                async for data in events:
                    for chunk in stream.read(data):
                        yield chunk
                    if stream.done:
                        break
        except httpx.HTTPError as error:
            reason = type(error).__name__
            raise BackendFailed(f"the upstream connection broke mid-answer ({reason})") from None
        usage = stream.usage()
        stats = wall_clock_stats(usage, started, stream.first_output) if options.bench else None
        yield GenerationEnd(usage=usage, stats=stats)


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").startswith("text/event-stream")
