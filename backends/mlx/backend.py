"""`MLXBackend`: the gateway's `Backend` protocol on top of the MLX engine thread.

Nothing here imports mlx or mlx-lm at module level: the gateway must start (and
serve other backends) on machines without them, and the first import of mlx must
come after `use_fast_blas`. `load` does both off the event loop.

Per request: the prompt is rendered (in a worker thread), sampling parameters
and one `ChoiceOutput` per choice are built, and a `Job` goes to the engine;
its events come back per decode step. Closing the generator (client gone)
cancels the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
import structlog
from msgspec import Meta

from backends.mlx.loading import load_model, start_engine, stop_engine, weights_bytes
from backends.mlx.tool_choice import (
    enforce_tool_choice,
    forced_tool,
    prompt_request,
    single_token,
)
from gateway.backend import (
    GenerationChunk,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    GenerationStats,
    ModelSpec,
    TokenUsage,
)
from gateway.config import ConfigError, parse_bytes
from gateway.errors import BackendFailed, BackendUnavailable, GatewayError, InvalidRequest
from gateway.protocol import ChatCompletionRequest

if TYPE_CHECKING:
    from backends.mlx.engine import Engine
    from backends.mlx.jobs import Job, JobDone
    from backends.mlx.prompt import Prompt
    from backends.mlx.sampling import SamplingParams

log = structlog.get_logger("backends.mlx")


class MLXOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[models.<id>.options]` of an mlx model.

    `dtype` casts the weights after loading (on Linux CPU float32 is fastest);
    `max_context` bounds prompt + max_tokens (a request over it gets a 400; the
    default is the model's `max_position_embeddings`);
    `fast_blas` preloads the system OpenBLAS for MLX's CPU matmuls;
    `max_batch_size` bounds the rows decoded together; `prefill_step_size` is the
    prompt chunk run between two decode steps of the other rows;
    `prefix_cache_bytes` caps the KV states kept for reuse by later prompts with
    the same prefix (bytes or "512MiB"; 0 turns the prefix cache off).
    """

    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = {}
    max_context: Annotated[int, Meta(ge=1)] | None = None
    fast_blas: bool = True
    max_batch_size: Annotated[int, Meta(ge=1, le=1024)] = 16
    prefill_step_size: Annotated[int, Meta(ge=16)] = 512
    prefix_cache_bytes: Annotated[int, Meta(ge=0)] | str = 512 * 1024**2


class MLXBackend:
    """Serves one mlx-lm model; every request field below is honoured, none ignored."""

    kind: ClassVar[str] = "mlx"
    bounds_max_tokens: ClassVar[bool] = True  # prompt + max_tokens must fit `max_context`
    supported_fields: ClassVar[frozenset[str]] = frozenset(
        {
            "max_tokens",
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "seed",
            "logit_bias",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "repetition_context_size",
            "stop",
            "n",
            "logprobs",
            "top_logprobs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "enable_thinking",
            "reasoning_effort",
        }
    )

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options: MLXOptions = spec.options_as(MLXOptions)
        self.prefix_cache_bytes: int = (
            parse_bytes(self.options.prefix_cache_bytes, f'models."{spec.id}".options.prefix_cache_bytes')
            or 0
        )
        if not spec.config.path:
            raise ConfigError(f'models."{spec.id}".path: the mlx backend needs the model\'s path')
        self._engine: Engine | None = None
        self._tokenizer: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._max_context: int | None = None
        self._max_token_chars = 0  # the longest token's text: bounds chars per token

    # --- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        """Start the engine thread and load the model on it (never on the event loop)."""
        if self._engine is not None:
            return
        engine = await asyncio.to_thread(start_engine, self.spec.id, self.options, self.prefix_cache_bytes)
        try:
            self._tokenizer, trained_context = await asyncio.wrap_future(
                engine.call(load_model, engine, self.spec, self.options)
            )
        except BaseException:
            await asyncio.to_thread(engine.stop)
            raise
        self._eos_ids = frozenset(int(i) for i in self._tokenizer.eos_token_ids)
        self._max_context = self.options.max_context or trained_context
        self._max_token_chars = await asyncio.to_thread(_longest_token, self._tokenizer)
        self._engine = engine

    async def unload(self) -> None:
        engine, self._engine = self._engine, None
        self._tokenizer = None
        if engine is None:
            return
        await asyncio.to_thread(stop_engine, engine)

    def memory_estimate(self) -> int:
        """Bytes the model will take: its weights' files, scaled when `dtype` casts
        16-bit weights to float32 or back, plus the prefix cache's cap (it fills up
        in use); the registry budgets loads with it."""
        return weights_bytes(self.spec.config.path or "", self.options.dtype) + self.prefix_cache_bytes

    def stats(self) -> dict[str, Any]:
        engine = self._engine
        return engine.stats() if engine is not None else {}

    # --- requests ---------------------------------------------------------------------

    def validate(self, request: ChatCompletionRequest) -> None:
        """Checks that need the loaded model; the gateway has checked field support,
        types, ranges and cross-field rules (`gateway.validation`) already."""
        if self._engine is not None:
            self._logit_bias(request)

    async def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        from backends.mlx.jobs import Job, JobDone

        engine, _ = self._ready()
        self._check_prompt_size(request)
        forced = forced_tool(request)
        prompt = await asyncio.to_thread(self._build_prompt, prompt_request(request, forced), bool(forced))
        if not prompt.tokens:
            raise InvalidRequest("the rendered prompt is empty", param="messages")
        max_tokens = self._token_limit(request, len(prompt.tokens))
        outputs = [
            self._choice_output(request, choice, prompt, options.bench)
            for choice in range(request.choice_count)
        ]
        params = [self._sampling(request, options.bench)] * request.choice_count
        job = Job(
            prompt.tokens, params, outputs, max_tokens=max_tokens, eos_ids=self._eos_ids, bench=options.bench
        )
        engine.submit(job)
        ended = False
        try:
            while True:
                for event in await job.queue.get():
                    if isinstance(event, GenerationChunk):
                        if event.finish_reason is not None and forced and not options.bench:
                            enforce_tool_choice(forced, event, outputs[event.choice].tool_calls)
                        yield event
                    elif isinstance(event, JobDone):
                        ended = True
                        yield self._end(job, event, outputs, options.bench)
                        return
                    else:
                        ended = True
                        if isinstance(event, GatewayError):
                            raise event
                        raise BackendFailed(f"generation failed: {type(event).__name__}: {event}") from event
        finally:
            if not ended:
                engine.cancel(job)

    # --- helpers ----------------------------------------------------------------------

    def _ready(self) -> tuple[Engine, Any]:
        if self._engine is None or not self._engine.running:
            raise BackendUnavailable(f"model '{self.spec.id}' is not loaded")
        return self._engine, self._tokenizer

    def _build_prompt(self, request: ChatCompletionRequest, open_tool_call: bool = False) -> Prompt:
        """Runs in a worker thread: template rendering and tokenizing are CPU work."""
        from backends.mlx.prompt import build_prompt

        return build_prompt(
            self._tokenizer,
            request,
            chat_template=self.options.chat_template,
            template_kwargs=self.options.chat_template_kwargs,
            open_tool_call=open_tool_call,
        )

    def _check_prompt_size(self, request: ChatCompletionRequest) -> None:
        """400 for a prompt that cannot fit, before the template and the tokenizer run.

        No token is longer than `_max_token_chars` characters, so messages with more
        than `max_context * _max_token_chars` characters are surely over the context:
        a 4 MiB body is refused in microseconds instead of seconds of tokenizing."""
        context = self._max_context
        if context is None or not self._max_token_chars:
            return
        bound = context * self._max_token_chars
        chars = 0
        for message in request.messages:
            chars += len(message.text())
            if chars > bound:
                raise InvalidRequest(
                    f"This model's maximum context length is {context} tokens; the messages have "
                    f"more characters ({chars}) than {context} tokens can hold",
                    param="messages",
                    code="context_length_exceeded",
                )

    def _token_limit(self, request: ChatCompletionRequest, prompt_tokens: int) -> int:
        # The gateway has applied the model's default and ceiling (`apply_model_config`).
        limit = request.max_tokens or self.spec.config.default_max_tokens
        context = self._max_context
        if context is not None and prompt_tokens + limit > context:
            if prompt_tokens >= context:
                raise InvalidRequest(
                    f"This model's maximum context length is {context} tokens; the prompt alone "
                    f"has {prompt_tokens} tokens",
                    param="messages",
                    code="context_length_exceeded",
                )
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens; the request needs "
                f"{prompt_tokens} prompt tokens + {limit} max_tokens. Lower max_tokens to at most "
                f"{context - prompt_tokens}",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return limit

    def _logit_bias(self, request: ChatCompletionRequest) -> dict[int, float]:
        """`logit_bias` with integer keys; 400 naming the field for ids outside the vocabulary."""
        if not request.logit_bias:
            return {}
        vocab = self._engine.vocab_size if self._engine is not None else 0
        bias: dict[int, float] = {}
        for key, value in request.logit_bias.items():
            try:
                token = int(key)
            except ValueError:
                raise InvalidRequest(
                    f"logit_bias keys must be token ids, got '{key}'", param="logit_bias"
                ) from None
            if not 0 <= token < vocab:
                raise InvalidRequest(
                    f"logit_bias names token id {token}, outside this model's vocabulary (0..{vocab - 1})",
                    param="logit_bias",
                )
            bias[token] = float(value)
        return bias

    def _sampling(self, request: ChatCompletionRequest, bench: bool) -> SamplingParams:
        from backends.mlx.sampling import SamplingParams

        banned = set(self._eos_ids) if bench else set()
        if request.tools and request.tool_choice == "none":
            start = single_token(self._tokenizer, getattr(self._tokenizer, "tool_call_start", None))
            if start is not None:
                banned.add(start)
        return SamplingParams(
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=request.top_k or 0,
            min_p=request.min_p or 0.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repetition_penalty=request.repetition_penalty or 1.0,
            repetition_context_size=request.repetition_context_size or 20,
            logit_bias=self._logit_bias(request),
            banned_tokens=frozenset(banned),
            seed=request.seed,
            logprobs=bool(request.logprobs),
            top_logprobs=request.top_logprobs or 0,
        )

    def _choice_output(self, request: ChatCompletionRequest, choice: int, prompt: Prompt, bench: bool) -> Any:
        from backends.mlx.output import ChoiceOutput

        return ChoiceOutput(
            self._tokenizer,
            choice=choice,
            stop=() if bench else request.stop_strings,
            parse_tools=bool(request.tools) and request.tool_choice != "none",
            in_reasoning=prompt.in_reasoning,
            in_tool_call=prompt.in_tool_call,
            logprobs=bool(request.logprobs),
            top_logprobs=request.top_logprobs or 0,
            parallel_tool_calls=request.parallel_tool_calls is not False,
            tools=request.tools,
        )

    def _end(self, job: Job, done: JobDone, outputs: list[Any], bench: bool) -> GenerationEnd:
        usage = TokenUsage(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            cached_tokens=done.cached_tokens,
            reasoning_tokens=sum(output.reasoning_tokens for output in outputs),
        )
        return GenerationEnd(usage=usage, stats=_stats(job, done) if bench else None)


def _longest_token(tokenizer: Any) -> int:
    """Characters in the vocabulary's longest token (0 if the tokenizer lists none).

    A byte-level BPE token's text has one character per byte, so this bounds the
    characters (and bytes) any token stands for."""
    try:
        vocab = tokenizer.get_vocab()
    except Exception:  # noqa: BLE001 - no bound is safe: the tokenizer then decides
        return 0
    return max(map(len, vocab), default=0)


def _stats(job: Job, done: JobDone) -> GenerationStats:
    """Bench figures. `generation_tps` counts the tokens after each row's first over
    the time after the first token (the first token's time is prefill's)."""
    t = done.timings
    prefill = max(t.prefill_finished - t.prefill_started, 1e-9)
    decode = t.finished - t.first_token
    after_first = done.completion_tokens - len(job.rows)
    return GenerationStats(
        prompt_tokens=done.prompt_tokens,
        generation_tokens=done.completion_tokens,
        prompt_tps=done.prompt_tokens / prefill,
        generation_tps=after_first / decode if after_first > 0 and decode > 0 else 0.0,
        ttft_ms=(t.first_token - t.submitted) * 1000,
        queue_ms=(t.prefill_started - t.submitted) * 1000,
        total_ms=(t.finished - t.submitted) * 1000,
        peak_memory_bytes=done.peak_memory,
        cached_tokens=done.cached_tokens,
    )
