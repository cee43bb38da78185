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
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from backends.mlx.grammar import GrammarCompiler, output_schema
from backends.mlx.loading import load_model, start_engine, stop_engine, weights_bytes
from backends.mlx.options import MLXOptions, check_options
from backends.mlx.tool_choice import ToolFormat, check_tool_choice, forced_tool, single_token, tool_format
from gateway import (
    BackendFailed,
    BackendUnavailable,
    ChatCompletionRequest,
    CompletionRequest,
    ConfigError,
    EmbeddingRequest,
    Embeddings,
    GatewayError,
    GenerationChunk,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    GenerationStats,
    InvalidRequest,
    ModelLoadFailed,
    ModelSpec,
    RawPrompt,
    TokenUsage,
    UnsupportedField,
    parse_bytes,
)

if TYPE_CHECKING:
    from backends.mlx.constraint import Constraint
    from backends.mlx.engine import Engine
    from backends.mlx.jobs import Job, JobDone
    from backends.mlx.prompt import Prompt
    from backends.mlx.sampling import SamplingParams

log = structlog.get_logger("backends.mlx")


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
            "response_format",
            "prompt",  # raw prompts (legacy completions): tokenized as they are
            "echo",
            "best_of",
            "suffix",  # models with fill-in-the-middle tokens (`infill.py`); others refuse it
            "input",  # embeddings (`embed`)
            "dimensions",
            "prediction",  # Predicted Outputs: drafts verified by speculative decoding
        }
    )

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = spec.options_as(MLXOptions)
        self.prefix_cache_bytes: int = (
            parse_bytes(self.options.prefix_cache_bytes, f'models."{spec.id}".options.prefix_cache_bytes')
            or 0
        )
        if not spec.config.path:
            raise ConfigError(f'models."{spec.id}".path: the mlx backend needs the model\'s path')
        check_options(spec.id, self.options)
        self._engine: Engine | None = None
        self._tokenizer: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._max_context: int | None = None
        self._hidden_size = 0  # the embeddings' size (0: unknown)
        self._grammars: GrammarCompiler | None = None  # made on the first constrained request
        self._takes_tools = True  # whether the chat template shows tools (else: the generic format)
        self._grammars_lock = threading.Lock()
        self._download: float | None = None  # written by the engine thread, read by /v1/models
        self._max_token_chars = 0  # the longest token's text: bounds chars per token

    # --- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        """Start the engine thread and load the model on it (never on the event loop)."""
        if self._engine is not None:
            return
        engine = await asyncio.to_thread(start_engine, self.spec.id, self.options, self.prefix_cache_bytes)
        try:
            self._tokenizer, trained_context = await asyncio.wrap_future(
                engine.call(load_model, engine, self.spec, self.options, self._downloaded)
            )
        except BaseException:
            await asyncio.to_thread(engine.stop)
            raise
        finally:
            self._download = None
        self._eos_ids = frozenset(int(i) for i in self._tokenizer.eos_token_ids)
        self._takes_tools = await asyncio.to_thread(self._template_takes_tools)
        self._max_context = self.options.max_context or trained_context
        self._hidden_size = int(getattr(getattr(engine.model, "args", None), "hidden_size", 0) or 0)
        self._max_token_chars = await asyncio.to_thread(_longest_token, self._tokenizer)
        self._engine = engine

    async def unload(self) -> None:
        engine, self._engine = self._engine, None
        self._tokenizer = None
        self._grammars = None
        if engine is None:
            return
        await asyncio.to_thread(stop_engine, engine)

    def download_progress(self) -> float | None:
        """The share (0..1) of the model's files downloaded while a load fetches them, else None."""
        return self._download

    def _downloaded(self, done: int, total: int) -> None:
        """Called on the engine thread with a download's byte counts; logs each tenth."""
        before = self._download
        self._download = done / total if total else None
        if self._download is not None and (before is None or int(self._download * 10) > int(before * 10)):
            log.info(
                "model downloading", model=self.spec.id, percent=round(self._download * 100), bytes=total
            )

    def pull(self) -> str:
        """Fetch the model's files ahead of its first load (`gateway pull`), with the
        downloader's own progress on stderr; the local path they are at."""
        from backends.mlx.loading import pull_files
        from backends.mlx.model_source import ModelSourceError

        try:
            return pull_files(self.spec.config.path or "")
        except ModelSourceError as error:
            raise ModelLoadFailed(f"model '{self.spec.id}': {error}") from None

    def memory_estimate(self) -> int:
        """Bytes the model will take: its weights' files, scaled when `dtype` casts
        16-bit weights to float32 or back, plus the prefix cache's cap (it fills up
        in use); the registry budgets loads with it."""
        draft = weights_bytes(self.options.draft_model, None) if self.options.draft_model else 0
        return (
            weights_bytes(self.spec.config.path or "", self.options.dtype) + draft + self.prefix_cache_bytes
        )

    def stats(self) -> dict[str, Any]:
        engine, grammars = self._engine, self._grammars
        if engine is None:
            return {}
        hits, misses = (grammars.hits, grammars.misses) if grammars is not None else (0, 0)
        return {**engine.stats(), "grammar_cache_hits": hits, "grammar_cache_misses": misses}

    # --- requests ---------------------------------------------------------------------

    def validate(self, request: ChatCompletionRequest) -> None:
        """Checks that need the loaded model; the gateway has checked field support,
        types, ranges and cross-field rules (`gateway.validation`) already."""
        output_schema(request.response_format)  # its shape; compiling it needs a worker thread
        if self._engine is not None:
            self._logit_bias(request)
            check_tool_choice(request, self._tool_format(request))

    async def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        from backends.mlx.jobs import Job, JobDone

        if isinstance(request, CompletionRequest):
            async for event in self._complete_raw(request, options):
                yield event
            return
        engine, _ = self._ready()
        self._check_prompt_size(request)
        fmt = self._tool_format(request)
        check_tool_choice(request, fmt)
        forced = forced_tool(request)
        prompt = await asyncio.to_thread(self._build_prompt, request, bool(forced), fmt)
        if not prompt.tokens:
            raise InvalidRequest("the rendered prompt is empty", param="messages")
        max_tokens = self._token_limit(request, len(prompt.tokens))
        constraints = await self._constraints(request, prompt, fmt, options.bench)
        outputs = [
            self._choice_output(request, choice, prompt, options.bench, fmt)
            for choice in range(request.choice_count)
        ]
        params = [self._sampling(request, options.bench)] * request.choice_count
        job = Job(
            prompt.tokens,
            params,
            outputs,
            max_tokens=max_tokens,
            eos_ids=self._eos_ids,
            bench=options.bench,
            constraints=constraints,
        )
        await asyncio.to_thread(self._attach_drafters, job, request)
        engine.submit(job)
        ended = False
        try:
            while True:
                for event in await job.queue.get():
                    if isinstance(event, GenerationChunk):
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

    async def _complete_raw(
        self, request: CompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        """Legacy completions: each raw prompt a job of `n` rows, choices prompt-major.

        With `echo`, each choice opens with its prompt's text (and with logprobs,
        the prompt tokens' logprobs, computed on the engine thread first)."""
        from backends.mlx.jobs import Job, JobDone
        from backends.mlx.prompt_logprobs import PromptScorer, logprob_entries

        engine, tokenizer = self._ready()
        prompts = await asyncio.to_thread(self._tokenize, request.raw_prompts, "prompt")
        if request.suffix is not None:
            prompts = await asyncio.to_thread(self._infill, request, prompts)
        n = request.n or 1
        limits = [self._token_limit(request, len(tokens), "prompt") for tokens in prompts]
        if request.echo:
            top = request.top_logprobs or 0
            for number, (raw, tokens) in enumerate(zip(request.raw_prompts, prompts, strict=True)):
                text = raw if isinstance(raw, str) else await asyncio.to_thread(tokenizer.decode, tokens)
                entries = None
                if request.logprobs:
                    scorer = PromptScorer(engine.model, tokens, top, engine.prefill_step_size)
                    while not scorer.done:
                        await asyncio.wrap_future(engine.call(scorer.step))
                    entries = logprob_entries(tokenizer, tokens, scorer.scores)
                for copy in range(n):
                    yield GenerationChunk(choice=number * n + copy, text=text, logprobs=entries)
        queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        jobs = []
        for number, (tokens, limit) in enumerate(zip(prompts, limits, strict=True)):
            outputs = [self._raw_output(request, number * n + copy) for copy in range(n)]
            job = Job(
                tokens,
                [self._sampling(request, options.bench)] * n,
                outputs,
                max_tokens=limit,
                eos_ids=self._eos_ids,
                bench=options.bench,
            )
            job.queue = queue  # one stream of events for every prompt's job
            self._attach_drafters(job, request)
            jobs.append(job)
        for job in jobs:
            engine.submit(job)
        left = len(jobs)
        usage = TokenUsage(0, 0)
        try:
            while left:
                for event in await queue.get():
                    if isinstance(event, GenerationChunk):
                        yield event
                    elif isinstance(event, JobDone):
                        left -= 1
                        usage = TokenUsage(
                            usage.prompt_tokens + event.prompt_tokens,
                            usage.completion_tokens + event.completion_tokens,
                            usage.cached_tokens + event.cached_tokens,
                        )
                    elif isinstance(event, GatewayError):
                        raise event
                    else:
                        raise BackendFailed(f"generation failed: {type(event).__name__}: {event}") from event
        finally:
            if left:
                for job in jobs:
                    engine.cancel(job)
        yield GenerationEnd(usage=usage)

    def _infill(self, request: CompletionRequest, prompts: list[list[int]]) -> list[list[int]]:
        """Each prompt wrapped for fill-in-the-middle with the request's `suffix`."""
        from backends.mlx.infill import fim_tokens, infill_prompt

        markers = fim_tokens(self._tokenizer)
        if markers is None:
            raise UnsupportedField(
                "suffix", self.kind, f"model '{self.spec.id}' has no fill-in-the-middle tokens"
            )
        if request.echo:
            raise InvalidRequest("'suffix' cannot be used with 'echo'", param="suffix")
        suffix = request.suffix or ""
        return [infill_prompt(self._tokenizer, tokens, suffix, markers) for tokens in prompts]

    def _raw_output(self, request: CompletionRequest, choice: int) -> Any:
        """A raw continuation's output: plain text (no reasoning or tool parsing)."""
        from backends.mlx.output import ChoiceOutput

        return ChoiceOutput(
            self._tokenizer,
            choice=choice,
            stop=request.stop_strings,
            parse_reasoning=False,
            continuation=True,
            logprobs=bool(request.logprobs),
            top_logprobs=request.top_logprobs or 0,
        )

    async def embed(self, request: EmbeddingRequest, options: GenerationOptions) -> Embeddings:
        """Pooled, L2-normalised final hidden states, one vector per input, batched on the
        engine thread between decode steps (`backends.mlx.embedding`)."""
        from backends.mlx.embedding import EmbedJob, hidden_states_of

        engine, _ = self._ready()
        if hidden_states_of(engine.model) is None:
            raise UnsupportedField("input", self.kind, f"model '{self.spec.id}' exposes no hidden states")
        inputs = await asyncio.to_thread(self._tokenize, request.raw_inputs, "input")
        if self._max_context is not None:
            for index, tokens in enumerate(inputs):
                if len(tokens) > self._max_context:
                    raise InvalidRequest(
                        f"input {index} has {len(tokens)} tokens; this model's maximum context length "
                        f"is {self._max_context} tokens",
                        param="input",
                        code="context_length_exceeded",
                    )
        dimensions = self._dimensions(request.dimensions)
        job = EmbedJob(inputs, self.options.embedding_pooling, dimensions)
        engine.embed(job)
        try:
            vectors = await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        except GatewayError:
            raise
        except Exception as error:
            raise BackendFailed(f"embedding failed: {type(error).__name__}: {error}") from error
        return Embeddings(vectors=vectors, prompt_tokens=sum(len(tokens) for tokens in inputs))

    def _dimensions(self, dimensions: int | None) -> int | None:
        if dimensions is None:
            return None
        if not self.options.embedding_dimensions:
            raise UnsupportedField(
                "dimensions",
                self.kind,
                f"model '{self.spec.id}' does not allow truncated embeddings (options.embedding_dimensions)",
            )
        size = self._hidden_size
        if size and dimensions > size:
            raise InvalidRequest(
                f"dimensions is {dimensions}, above this model's embedding size of {size}", param="dimensions"
            )
        return dimensions

    def _tokenize(self, prompts: list[RawPrompt], param: str) -> list[list[int]]:
        """Runs in a worker thread: text is encoded as it is (the tokenizer's own special
        tokens, e.g. BOS, but no chat template); token ids are checked against the vocabulary."""
        vocab = self._engine.vocab_size if self._engine is not None else 0
        result = []
        for index, prompt in enumerate(prompts):
            tokens = list(self._tokenizer.encode(prompt)) if isinstance(prompt, str) else prompt
            if not tokens:
                raise InvalidRequest(f"{param} {index} is empty once tokenized", param=param)
            outside = next((token for token in tokens if token >= vocab), None)
            if outside is not None:
                raise InvalidRequest(
                    f"{param} {index} has token id {outside}, outside this model's vocabulary (0..{vocab - 1})",
                    param=param,
                )
            result.append(tokens)
        return result

    async def count_tokens(self, request: ChatCompletionRequest) -> int:
        """The rendered prompt's length: the tokens `generate` would prefill."""
        self._ready()
        fmt = self._tool_format(request)
        prompt = await asyncio.to_thread(self._build_prompt, request, bool(forced_tool(request)), fmt)
        return len(prompt.tokens)

    # --- helpers ----------------------------------------------------------------------

    def _ready(self) -> tuple[Engine, Any]:
        if self._engine is None or not self._engine.running:
            raise BackendUnavailable(f"model '{self.spec.id}' is not loaded")
        return self._engine, self._tokenizer

    async def _constraints(
        self, request: ChatCompletionRequest, prompt: Prompt, fmt: ToolFormat | None, bench: bool
    ) -> list[Constraint]:
        """One constraint per choice for the grammar the request asks for (none: []),
        compiled in a worker thread, never on the engine's (`request_grammar`)."""
        from backends.mlx.request_grammar import grammar_field, request_grammar, row_constraints

        field = grammar_field(request, fmt)
        if field is None:
            return []
        if bench:
            raise InvalidRequest(
                f"the bench endpoint bans end-of-sequence, which a grammar ({field}) needs to end; "
                f"send {field} to /v1/chat/completions",
                param=field,
            )
        try:
            compiler = await asyncio.to_thread(self._compiler)
        except ValueError as error:  # llguidance takes fast (Rust) tokenizers only
            raise InvalidRequest(
                f"{field} needs grammar-constrained decoding, which this model's tokenizer does not "
                f"allow: {error}",
                param=field,
            ) from None
        grammar = request_grammar(request, prompt, fmt, self._tokenizer, compiler)
        matcher = await asyncio.to_thread(compiler.compile, grammar)
        return row_constraints(request, prompt, fmt, grammar, matcher, self._tokenizer)

    def _compiler(self) -> GrammarCompiler:
        """The grammar compiler (its llguidance tokenizer is built on first use)."""
        from backends.mlx.grammar import ll_tokenizer

        with self._grammars_lock:
            if self._grammars is None:
                engine, tokenizer = self._ready()
                self._grammars = GrammarCompiler(ll_tokenizer(tokenizer, engine.vocab_size))
            return self._grammars

    def _tool_format(self, request: ChatCompletionRequest) -> ToolFormat | None:
        """How this request's tool calls are written and read (None: no tools in play)."""
        if not request.tools or request.tool_choice == "none":
            return None
        return tool_format(self._tokenizer, generic=not self._takes_tools)

    def _template_takes_tools(self) -> bool:
        from backends.mlx.prompt import takes_tools

        return takes_tools(
            self._tokenizer,
            chat_template=self.options.chat_template,
            template_kwargs=self.options.chat_template_kwargs,
        )

    def _build_prompt(
        self, request: ChatCompletionRequest, open_tool_call: bool = False, fmt: ToolFormat | None = None
    ) -> Prompt:
        """Runs in a worker thread: template rendering and tokenizing are CPU work."""
        from backends.mlx.prompt import build_prompt

        return build_prompt(
            self._tokenizer,
            request,
            chat_template=self.options.chat_template,
            template_kwargs=self.options.chat_template_kwargs,
            open_tool_call=open_tool_call and fmt is not None and fmt.can_force,
            tool_format=fmt,
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

    def _token_limit(
        self, request: ChatCompletionRequest, prompt_tokens: int, param: str = "messages"
    ) -> int:
        # The gateway has applied the model's default and ceiling (`apply_model_config`).
        limit = request.max_tokens or self.spec.config.default_max_tokens
        context = self._max_context
        if context is not None and prompt_tokens + limit > context:
            if prompt_tokens >= context:
                raise InvalidRequest(
                    f"This model's maximum context length is {context} tokens; the prompt alone "
                    f"has {prompt_tokens} tokens",
                    param=param,
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
        """`logit_bias` with integer keys (`gateway.validation` checked they are ids);
        400 naming the field for ids outside the vocabulary."""
        if not request.logit_bias:
            return {}
        vocab = self._engine.vocab_size if self._engine is not None else 0
        bias: dict[int, float] = {}
        for key, value in request.logit_bias.items():
            token = int(key)
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

    def _choice_output(
        self, request: ChatCompletionRequest, choice: int, prompt: Prompt, bench: bool, fmt: ToolFormat | None
    ) -> Any:
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
            tool_format=fmt,
        )

    def _attach_drafters(self, job: Job, request: ChatCompletionRequest) -> None:
        """Give each row its draft source: prompt lookup (the model's `speculative`
        option) or its draft model, and/or the request's Predicted Output, tokenized."""
        from backends.mlx.draft_model import ModelDraft
        from backends.mlx.speculative import Drafter

        prediction = getattr(request, "prediction", None)
        lookup = self.options.speculative == "prompt_lookup"
        if not (lookup or self.options.draft_model or prediction is not None):
            return
        engine, tokenizer = self._ready()
        if not engine.can_speculate:
            if prediction is not None:
                raise UnsupportedField(
                    "prediction", self.kind, f"model '{self.spec.id}' has a KV cache that cannot roll back drafts"
                )
            return
        predicted: list[int] = []
        if prediction is not None:
            content = prediction.content
            text = content if isinstance(content, str) else "".join(part.text for part in content)
            predicted = list(tokenizer.encode(text, add_special_tokens=False)) if text else []
        draft_model = engine.draft_model
        for row in job.rows:
            model = ModelDraft(draft_model, engine.vocab_size) if draft_model is not None else None
            row.drafter = Drafter(job.prompt, lookup=lookup, prediction=predicted, model=model)

    def _end(self, job: Job, done: JobDone, outputs: list[Any], bench: bool) -> GenerationEnd:
        drafters = [row.drafter for row in job.rows if row.drafter is not None]
        usage = TokenUsage(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            cached_tokens=done.cached_tokens,
            reasoning_tokens=sum(output.reasoning_tokens for output in outputs),
            accepted_prediction_tokens=sum(drafter.accepted_prediction for drafter in drafters),
            rejected_prediction_tokens=sum(drafter.rejected_prediction for drafter in drafters),
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
