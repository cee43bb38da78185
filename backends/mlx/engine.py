"""One thread owns all MLX work of a model; the event loop talks to it through a queue.

The thread runs a continuous-batching loop. Each turn it

1. takes every message off its inbox: new jobs queue up, a cancelled job's rows
   leave the batch at once (so they are freed before the next decode step),
   calls (load, unload) run;
2. runs one prefill chunk, if prefill's share of the time allows (below): the
   jobs waiting when a prefill starts that fit the batch are prefilled together,
   one forward pass per chunk for all of them (`schedule.py` says which join;
   each starts after the longest prefix found in the prefix cache; a finished
   prompt is stored there and its rows join the batch with their first tokens);
3. runs one decode step of the batch, if running streams are owed one, and
   feeds each row's token to its output pipeline (text, stop strings, tool
   calls), retiring finished rows;
4. sends each job the events of this turn with one `call_soon_threadsafe` per
   event loop.

Prefill and decode share the engine by a debt rule (`schedule.DecodeDebt`):
while requests wait for their first token, prefill chunks run back to back,
and running streams get a decode step once they are owed one. Each chunk owes
them its time times running rows / waiting rows (an equal share per row), but
at most one decode step, and at least enough that they keep `decode_floor` of
the engine's time (10% by default) however long the queue. So a burst of
newcomers is prefilled nearly back to back beside a few streams, while a lone
newcomer beside many streams gets one chunk per decode step, as before.

Embedding jobs (`embedding.EmbedJob`) run a chunk per turn, before the
prefill: at full speed when nothing decodes, and while rows decode only
within `embed_share` of the engine's time (each chunk's time is paid back by
decode time before the next), so running streams keep most of their speed.

The event loop is never blocked by MLX: `submit`/`cancel`/`call` only enqueue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import mlx.core as mx
import structlog
from mlx import nn
from mlx_lm.utils import maybe_set_recommended_wired_limit

from backends.mlx.batch import DecodeBatch, Extra, Newcomer, Prefill, can_batch
from backends.mlx.constraint import BatchMasks
from backends.mlx.embedding import EmbedJob
from backends.mlx.jobs import Event, Job, JobDone, Row, deliver
from backends.mlx.output import TokenStep
from backends.mlx.prefix_cache import PrefixCache, no_prefix_stats
from backends.mlx.quantized_cache import KVQuantization, check_quantization, new_cache
from backends.mlx.schedule import DecodeDebt, Waiting, joins
from backends.mlx.speculative import Speculation, can_roll_back
from gateway import BackendFailed, BackendUnavailable

log = structlog.get_logger("backends.mlx.engine")

_STOP = object()


class Engine:
    """The model's thread: `start`, then `call` (e.g. to load), `submit`, `cancel`, `stop`."""

    def __init__(
        self,
        *,
        max_batch_size: int = 16,
        prefill_step_size: int = 512,
        prefix_cache_bytes: int = 0,
        embed_share: float = 0.15,
        kv_quantization: KVQuantization | None = None,
        num_draft_tokens: int = 4,
        decode_floor: float = 0.1,
        name: str = "mlx",
    ) -> None:
        self.max_batch_size = max_batch_size
        self.decode = DecodeDebt(decode_floor)  # how prefill and decode share the time
        self.embed_share = embed_share
        # Embedding chunks, in tokens: smaller than prefill chunks, and smaller still
        # beside running streams, which wait for one chunk at most.
        self.embed_step_size = max(16, prefill_step_size // 8)
        self.embed_step_beside_streams = max(16, prefill_step_size // 32)
        self.prefill_step_size = prefill_step_size
        self.prefix_cache_bytes = prefix_cache_bytes
        self.kv = kv_quantization  # how KV caches are stored (None: full precision)
        self.prefix: PrefixCache | None = None  # KV states of earlier prompts (prefix_cache.py)
        self.model: nn.Module | None = None
        self.vocab_size = 0
        self.batched = True  # whether the model's cache merges rows into one batch
        self.speculation = Speculation(num_draft_tokens)  # drafts' settings and acceptance counts
        self.can_speculate = False  # whether the model's cache can take rejected drafts back
        self.draft_model: nn.Module | None = None  # the `draft_model` option's model (`draft_model.py`)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"{name}-engine", daemon=True)
        self._waiting: deque[Waiting] = deque()
        self._prefill: Prefill | None = None
        self._batch: DecodeBatch | None = None
        self._dirty: list[Job] = []
        self._embeds: deque[EmbedJob] = deque()
        self._embed_debt = 0.0  # decode seconds owed to running rows before the next embed chunk
        self._decoding = False  # a decode step's forward pass may still be running
        self._peak_group = 0
        self._masks: BatchMasks | None = None  # grammar masks, made when a constrained job comes

    # --- the event loop's side --------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def call(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run `function(*args)` on the engine thread, between steps."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._inbox.put(("call", function, args, future))
        return future

    def submit(self, job: Job) -> None:
        self._inbox.put(("submit", job))

    def embed(self, job: EmbedJob) -> None:
        self._inbox.put(("embed", job))

    def cancel(self, job: Job) -> None:
        """Stop a job (client gone); its rows leave the batch before the next step."""
        self._inbox.put(("cancel", job))

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread; jobs still running get a `BackendUnavailable` error."""
        if self._thread.is_alive():
            self._inbox.put(_STOP)
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict[str, float]:
        """A racy but harmless snapshot for status pages (read from any thread)."""
        batch, prefix, prefill = self._batch, self.prefix, self._prefill
        return {
            "running_rows": len(batch.rows) if batch is not None else 0,
            "grammar_rows": batch.constrained if batch is not None else 0,
            # the largest decode step so far, and how many of its rows had a grammar
            "peak_rows": batch.peak[0] if batch is not None else 0,
            "peak_grammar_rows": batch.peak[1] if batch is not None else 0,
            "waiting_requests": len({id(waiting.job) for waiting in tuple(self._waiting)}),
            "prefilling": len(prefill.entries) if prefill is not None else 0,
            "peak_prefill_jobs": self._peak_group,  # the largest group prefilled together so far
            "embedding_requests": len(self._embeds),
            "max_batch_size": self.max_batch_size,
            **(prefix.stats() if prefix is not None else no_prefix_stats()),
            **self.speculation.stats(),
        }

    # --- loading, on the engine thread ------------------------------------------------

    def attach(self, model: nn.Module) -> None:
        """Use `model` from now on (call on the engine thread, e.g. via `call`).

        One warm-up token measures the vocabulary (the logits' width, which may
        exceed the tokenizer's) and the head dimensions a quantized KV cache must
        group (`KVCacheConfigError` if it cannot); then whether the cache can batch.
        """
        if mx.metal.is_available():  # keep the weights wired on Apple silicon, as mlx-lm does
            maybe_set_recommended_wired_limit()
        cache = new_cache(model)
        logits = model(mx.array([[0]]), cache=cache)
        mx.eval(logits)
        if self.kv is not None:
            check_quantization(cache, self.kv)
        self.model = model
        self.vocab_size = int(logits.shape[-1])
        self.batched = can_batch(new_cache(model, self.kv))
        self.can_speculate = can_roll_back(new_cache(model, self.kv))
        self._batch = self._new_batch()
        self.prefix = PrefixCache(model, self.prefix_cache_bytes, self.kv)

    def _new_batch(self) -> DecodeBatch:
        batch = DecodeBatch(self.model)
        batch.masks = self._masks
        batch.speculation = self.speculation if self.can_speculate else None
        return batch

    def detach(self) -> None:
        self._fail_all(BackendUnavailable("the model was unloaded"))
        self.model = None
        self.draft_model = None
        self._batch = None
        self.prefix = None

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._take_messages():
                break
            if self.model is not None:
                try:
                    self._turn()
                except Exception as error:  # keep the thread alive: fail what was running
                    log.exception("engine turn failed")
                    self._fail_all(error)
            self._flush()
        self._fail_all(BackendUnavailable("the model was unloaded"))
        self._flush()

    def _busy(self) -> bool:
        return bool(self._waiting or self._prefill or self._embeds or (self._batch and len(self._batch)))

    def _take_messages(self) -> bool:
        """Handle every queued message (waiting for one when idle); False on stop."""
        block = not self._busy()
        while True:
            try:
                message = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if message is _STOP:
                return False
            kind = message[0]
            if kind == "submit":
                self._admit(message[1])
            elif kind == "cancel":
                self._cancel(message[1])
            elif kind == "embed":
                if self.model is None:
                    message[1].resolve(BackendUnavailable("the model is not loaded"))
                else:
                    self._embeds.append(message[1])
            elif kind == "call":
                _, function, args, future = message
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(function(*args))
                    except Exception as error:  # noqa: BLE001 - handed to the caller
                        future.set_exception(error)

    def _admit(self, job: Job) -> None:
        if self.model is None:
            self._post(job, BackendUnavailable("the model is not loaded"))
            job.done = True
            return
        if self._masks is None and any(row.constraint for row in job.rows):
            self._masks = BatchMasks(self.vocab_size)  # llguidance's threads start on first use
            if self._batch is not None:
                self._batch.masks = self._masks
        if self.batched:
            self._waiting.append(Waiting(job, job.rows))
        else:
            self._waiting.extend(Waiting(job, [row]) for row in job.rows)

    def _cancel(self, job: Job) -> None:
        """Forget a job at once: its rows leave the batch (and its prefill group)
        before the next step."""
        job.cancelled = True
        self._waiting = deque(waiting for waiting in self._waiting if waiting.job is not job)
        if self._prefill is not None and self._prefill.drop(job):
            self._prefill = None
        if self._batch is not None:
            self._batch.remove(set(job.rows))
        job.outbox.clear()
        job.done = True

    def _turn(self) -> None:
        batch = self._batch
        assert batch is not None
        streams = bool(len(batch) or self._waiting or self._prefill)
        embedding = self._embed_step(streams)
        started = time.perf_counter()
        prefill = "idle"
        if not len(batch) or self.decode.prefill_may_run:
            running, waiting = len(batch), self._waiting_rows()
            if running and self._decoding:  # the step in flight is decode's time, not the chunk's
                synced = time.perf_counter()
                mx.synchronize()
                self.decode.waited(time.perf_counter() - synced)
            self._decoding = False
            chunk_started = time.perf_counter()
            prefill = self._prefill_step()
            if prefill != "idle":
                self.decode.prefilled(time.perf_counter() - chunk_started, running, waiting)
        # a group that just joined decodes at once: that step hands out its first tokens
        if len(batch) and (prefill != "chunk" or not self.decode.prefill_may_run):
            stepped = time.perf_counter()
            try:
                rows, tokens, extras = batch.step()
                finished = self._emit(rows, tokens, extras)
                for rows, tokens, extras in batch.rounds:  # accepted drafts, one position at a time
                    live = [index for index, row in enumerate(rows) if row not in finished]
                    finished |= self._emit([rows[i] for i in live], [tokens[i] for i in live], extras)
                if finished:
                    batch.remove(finished)
                batch.finish_step()  # constrained rows: masks and sampling, after the output work
            except Exception as error:  # the batch's state is unknown now: start afresh
                log.exception("decode step failed")
                self._fail_rows(list(batch.rows), error)
                self._batch = self._new_batch()
                return
            self.decode.decoded(time.perf_counter() - stepped)
            self._decoding = True
        if not (self._waiting or self._prefill):
            self.decode.clear()
        if streams and (embedding or self._embed_debt):  # this turn's stream work pays embeddings back
            self._embed_debt = max(0.0, self._embed_debt - (time.perf_counter() - started))

    def _embed_step(self, streams: bool) -> float:
        """Run one chunk of the oldest embedding job, if its share allows; returns its seconds.

        `streams`: generation requests are decoding or waiting; then a chunk runs
        only once the last one's time is paid back (`_embed_debt`)."""
        while self._embeds and self._embeds[0].cancelled:
            self._embeds.popleft()
        if not self._embeds or (streams and self._embed_debt > 0):
            return 0.0
        job = self._embeds[0]
        started = time.perf_counter()
        try:
            job.step(self.model, self.embed_step_beside_streams if streams else self.embed_step_size)
        except Exception as error:
            log.exception("embedding failed")
            self._embeds.popleft()
            job.resolve(error)
            return time.perf_counter() - started
        if job.finished:
            self._embeds.popleft()
            job.resolve()
        spent = time.perf_counter() - started
        if streams:
            self._embed_debt += spent * (1 - self.embed_share) / self.embed_share
        return spent

    def _waiting_rows(self) -> int:
        waiting = sum(len(item.rows) for item in self._waiting)
        return waiting + (len(self._prefill.rows) if self._prefill is not None else 0)

    def _prefill_step(self) -> Literal["idle", "chunk", "joined"]:
        """Run one chunk of the current prefill group, forming the next group from
        the waiting jobs first: "idle" when there was nothing to run, "joined" when
        the group finished and its rows joined the batch."""
        batch = self._batch
        if self._prefill is None:
            self._prefill = self._next_group()
            if self._prefill is None:
                return "idle"
        prefill = self._prefill
        try:
            logits = prefill.step()
            if logits is None:
                return "chunk"
            self._prefill = None
            self._keep_prompts(prefill)
            cache, sampler, sampled = prefill.finish(logits, self.vocab_size, batch.masks)
        except Exception as error:  # one forward pass served the group: fail the group
            log.exception("prefill failed")
            self._prefill = None
            self._fail_rows(prefill.rows, error)
            return "chunk"
        finished = time.perf_counter()
        for job in prefill.jobs:
            job.timings.prefill_finished = finished
        batch.join(prefill.rows, cache, sampler, sampled)
        return "joined"

    def _next_group(self) -> Prefill | None:
        """The waiting jobs that start prefilling now, oldest first (`schedule.py`)."""
        self._waiting = deque(waiting for waiting in self._waiting if not waiting.job.done)
        if not self._waiting:
            return None
        running = len(self._batch)
        room = self.max_batch_size - running
        head = self._waiting[0]
        if running and not (self.batched and len(head.rows) <= room):
            return None
        group: list[Waiting] = []
        for waiting in self._waiting:
            if group and (not self.batched or len(waiting.rows) > room):
                if not self.batched:
                    break
                continue
            self._look_up(waiting)
            if group and not joins(group, waiting, self.prefill_step_size):
                continue
            group.append(waiting)
            room -= len(waiting.rows)
        chosen = {id(waiting) for waiting in group}
        self._waiting = deque(waiting for waiting in self._waiting if id(waiting) not in chosen)
        started = time.perf_counter()
        newcomers = []
        for waiting in group:
            job = waiting.job
            if not job.timings.prefill_started:
                job.timings.prefill_started = started
                job.cached_tokens = waiting.cached
                if job.bench:
                    mx.reset_peak_memory()
            cache = waiting.cache if waiting.cache is not None else new_cache(self.model, self.kv)
            newcomers.append(Newcomer(job, waiting.rows, cache, waiting.cached))
        self._peak_group = max(self._peak_group, len(newcomers))
        return Prefill(self.model, newcomers, self.prefill_step_size)

    def _look_up(self, waiting: Waiting) -> None:
        """Find a waiting job's longest cached prefix, once."""
        if waiting.looked_up:
            return
        waiting.looked_up = True
        if self.prefix is not None and not waiting.job.bench:
            waiting.cache, waiting.cached = self.prefix.take(waiting.job.prompt)

    def _keep_prompts(self, prefill: Prefill) -> None:
        """Store each prompt's state in the prefix cache, before `finish` reshapes the cache."""
        if self.prefix is None or self.prefix.mode is None:
            return
        for index, job in enumerate(prefill.jobs):
            if job.bench:
                continue
            try:
                self.prefix.keep(job.prompt, prefill.prompt_cache(index))
            except Exception:  # an optimisation only: never fail the request over it
                log.exception("prefix cache insert failed")

    def _emit(self, rows: list[Row], tokens: list[int], extras: dict[Row, Extra]) -> set[Row]:
        """Feed one token to each row's output; returns the rows that finished."""
        finished: set[Row] = set()
        now = time.perf_counter()
        for row, token in zip(rows, tokens):
            job = row.job
            if job.done:
                finished.add(row)
                continue
            if not job.timings.first_token:
                job.timings.first_token = now
            row.generated += 1
            row.tokens.append(token)
            if row.constraint is not None and row.constraint.error is not None:
                self._fail_rows([row], BackendFailed(f"constrained decoding failed: {row.constraint.error}"))
                finished.update(job.rows)
                continue
            extra = extras.get(row)
            if token in job.eos_ids:
                end = (
                    TokenStep(token, *extra) if extra and getattr(row.output, "reports_end", False) else None
                )
                self._finish(row, "stop", end)
                finished.add(row)
                continue
            try:
                chunk = row.output.feed(TokenStep(token, *extra) if extra else TokenStep(token))
                if chunk is not None:
                    self._post(job, chunk)
                if row.output.stopped:
                    self._finish(row, "stop")
                    finished.add(row)
                elif row.generated >= job.max_tokens:
                    self._finish(row, "length")
                    finished.add(row)
            except Exception as error:  # one request's output failed: end that request only
                log.exception("output pipeline failed")
                self._fail_rows([row], error)
                finished.update(job.rows)
        return finished

    def _finish(self, row: Row, reason: str, end: TokenStep | None = None) -> None:
        """`end`: the end-of-sequence token, for outputs that report its logprob."""
        row.finished = True
        job = row.job
        self._keep_reply(row)
        if row.drafter is not None:
            row.drafter.release()  # a draft model's cache: freed here, on the thread that made it
        chunk = row.output.finish(reason) if end is None else row.output.finish(reason, end)  # type: ignore[arg-type, call-arg]
        self._post(job, chunk)
        job.rows_left -= 1
        if job.rows_left == 0:
            job.timings.finished = time.perf_counter()
            peak = mx.get_peak_memory() if job.bench else 0
            done = JobDone(len(job.prompt), job.completion_tokens, job.timings, peak, job.cached_tokens)
            self._post(job, done)
            job.done = True

    def _keep_reply(self, row: Row) -> None:
        """Store prompt + reply of a finished single-choice row: a chat's next turn starts so."""
        prefix, job = self.prefix, row.job
        if prefix is None or not prefix.keeps_rows or len(job.rows) != 1 or job.bench:
            return
        try:
            prefix.keep(job.prompt + row.tokens, self._batch.row_cache(row) or [])
        except Exception:  # an optimisation only: never fail the request over it
            log.exception("prefix cache insert failed")

    # --- failures and delivery ----------------------------------------------------------

    def _fail_rows(self, rows: list[Row], error: BaseException) -> None:
        for job in {row.job: None for row in rows}:
            if not job.done:
                self._post(job, error)
                job.done = True

    def _fail_all(self, error: BaseException) -> None:
        rows: list[Row] = []
        if self._batch is not None:
            rows += self._batch.rows
            self._batch = self._new_batch() if self.model is not None else None
        if self._prefill is not None:
            rows += self._prefill.rows
            self._prefill = None
        for waiting in self._waiting:
            rows += waiting.rows
        self._waiting.clear()
        self._fail_rows(rows, error)
        while self._embeds:
            self._embeds.popleft().resolve(error)

    def _post(self, job: Job, event: Event) -> None:
        if not job.outbox:
            self._dirty.append(job)
        job.outbox.append(event)

    def _flush(self) -> None:
        """Deliver this turn's events: one `call_soon_threadsafe` per event loop."""
        if not self._dirty:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job in self._dirty:
            if job.outbox and not job.cancelled:
                by_loop.setdefault(job.loop, []).append((job.queue, job.outbox))
            job.outbox = []
        self._dirty = []
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, batch)
            except RuntimeError:  # the loop is closed: nobody is listening
                pass
