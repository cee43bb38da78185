"""The backend protocol: what a model engine must provide to be served.

A backend is created per configured model (`Backend(spec)`), loaded once, and
asked to `generate` for each request. Creating one only checks its options (the
gateway builds and drops one per model to check a config); `load` does the work.
Generation is an async stream of `GenerationChunk`s (deltas for one choice)
closed by one `GenerationEnd` (token counts, and measured stats for the bench
endpoint). Backends know nothing of HTTP: the gateway turns these events into
OpenAI responses.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Literal, Protocol

from msgspec import Struct

from gateway.config import ModelConfig, convert_config
from gateway.prompts import EmbeddingRequest, Embeddings
from gateway.protocol import GATEWAY_FIELDS, ChatCompletionRequest

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ToolCallDelta(Struct, omit_defaults=True):
    """A piece of one tool call: the first piece of a call has `id` and `name`."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class GenerationChunk(Struct, omit_defaults=True):
    """New output for one choice; `finish_reason` is set on that choice's last chunk."""

    choice: int = 0
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_sequence: str | None = None  # with finish_reason "stop": the stop string that matched


class TokenUsage(Struct):
    """Token counts summed over all choices."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    accepted_prediction_tokens: int = 0  # Predicted Outputs: prediction tokens the answer kept
    rejected_prediction_tokens: int = 0  # ... and the prediction's other tokens


class GenerationStats(Struct):
    """Measured figures for the bench endpoint."""

    prompt_tokens: int
    generation_tokens: int
    prompt_tps: float
    generation_tps: float
    ttft_ms: float
    queue_ms: float
    total_ms: float
    peak_memory_bytes: int
    cached_tokens: int


def wall_clock_stats(usage: TokenUsage, started: float, first_output: float | None) -> GenerationStats:
    """Bench stats from `time.perf_counter()` readings, for backends that cannot see
    inside the engine (prefill ends at the first output; no queue or memory figures)."""
    now = time.perf_counter()
    first = first_output or now
    prefill_s = max(first - started, 1e-9)
    decode_s = max(now - first, 1e-9)
    return GenerationStats(
        prompt_tokens=usage.prompt_tokens,
        generation_tokens=usage.completion_tokens,
        prompt_tps=usage.prompt_tokens / prefill_s,
        generation_tps=max(usage.completion_tokens - 1, 0) / decode_s,
        ttft_ms=prefill_s * 1000,
        queue_ms=0.0,
        total_ms=(now - started) * 1000,
        peak_memory_bytes=0,
        cached_tokens=usage.cached_tokens,
    )


class GenerationEnd(Struct):
    usage: TokenUsage
    stats: GenerationStats | None = None


GenerationEvent = GenerationChunk | GenerationEnd


class GenerationOptions(Struct, frozen=True):
    """How to generate, beyond the request itself.

    `bench`: generate exactly the token limit (end-of-sequence banned, stop
    strings off, llama-bench style), bypass any prefix cache, and report
    `GenerationStats` in the `GenerationEnd`.
    """

    bench: bool = False
    request_id: str = ""


class ModelSpec(Struct, frozen=True):
    """What a backend is built from: the model's id and its config table."""

    id: str
    config: ModelConfig

    def options_as(self, type_: type[Any]) -> Any:
        """Decode the backend-specific `options` table into the backend's own Struct.

        Errors name the key path, e.g. `models."llama".options.dtype`.
        """
        return convert_config(self.config.options, type_, f'models."{self.id}".options')


class Backend(Protocol):
    """A model engine. Implementations need not subclass anything (docs/backends.md).

    `supported_fields` names the request fields (beyond `GATEWAY_FIELDS`, which the
    gateway handles for every backend) that the backend honours; a request setting
    any other field gets a 400 naming it.
    Raw prompts (`gateway.prompts.CompletionRequest`) are fields too: `prompt`,
    `echo`, `best_of`, `suffix`. Embeddings: see `Embedder`.
    """

    kind: ClassVar[str]
    supported_fields: ClassVar[frozenset[str]]

    async def load(self) -> None:
        """Make the model ready; runs once, off the request path of other models."""

    def validate(self, request: ChatCompletionRequest) -> None:
        """Raise `UnsupportedField`/`InvalidRequest` for values it cannot honour."""

    def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        """Stream chunks for every choice, then exactly one `GenerationEnd`."""
        ...

    async def unload(self) -> None:
        """Free the model's memory."""

    def memory_estimate(self) -> int:
        """Bytes the loaded model will take, before `load` (0 when it holds none here):
        the registry makes room for it within `server.memory_budget`. Cheap."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures for `GET /v1/models` (`backend_stats`): JSON-safe, cheap, any time."""
        ...


class TokenCounter(Protocol):
    """Optional on a backend: the prompt's token count for a request, as `generate` would
    render it (Anthropic's count_tokens). A backend without it answers that route a 400."""

    async def count_tokens(self, request: ChatCompletionRequest) -> int: ...


class Embedder(Protocol):
    """Optional on a backend: embeddings (`/v1/embeddings`). It lists `input` (and
    `dimensions`, if it can) in `supported_fields`; `Pipeline.embed` answers a backend
    without `embed` a 400 naming `input`."""

    async def embed(self, request: EmbeddingRequest, options: GenerationOptions) -> Embeddings:
        """One unit vector per input of `request.raw_inputs`, in order, and their token count."""
        ...


_UNSET_VALUES: dict[str, Any] = {"stream": False, "n": 1, "logprobs": False}


def _asks_for_something(name: str, value: Any) -> bool:
    if name == "web_search_options":  # `{}` turns search on with its defaults
        return value is not None
    return not (value is None or value == _UNSET_VALUES.get(name) or value == [] or value == {})


@functools.cache
def _unsupported_names(
    request_type: type[ChatCompletionRequest], supported: frozenset[str]
) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """The request fields a backend does not honour, in declaration order, and a getter for
    their values (worked out once per request type and backend kind). A subclass's own
    fields (`gateway.prompts`) come first: they are what its endpoint is about."""
    fields = request_type.__struct_fields__
    base = len(ChatCompletionRequest.__struct_fields__)
    allowed = GATEWAY_FIELDS | supported
    names = tuple(name for name in (*fields[base:], *fields[:base]) if name not in allowed)
    if len(names) > 1:
        return names, operator.attrgetter(*names)  # a tuple of values in one C call
    return names, lambda request: tuple(getattr(request, name) for name in names)


def unsupported_fields(request: ChatCompletionRequest, backend: type[Backend] | Backend) -> list[str]:
    names, values_of = _unsupported_names(type(request), frozenset(backend.supported_fields))
    values = values_of(request)
    if values.count(None) == len(values):  # the usual case, at C speed
        return []
    return [name for name, value in zip(names, values, strict=True) if _asks_for_something(name, value)]
