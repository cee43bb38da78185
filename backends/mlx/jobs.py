"""A request as the engine sees it: rows, limits, timings, and the way back to asyncio.

A `Job` is created on the event loop, handed to the engine thread, and from then
on only the engine thread touches its rows and outputs. Results travel back as
lists of events put on `job.queue` from the loop thread (`deliver`), one list per
decode step, so the loop wakes once per step rather than once per token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from backends.mlx.sampling import SamplingParams
from gateway import GenerationChunk

if TYPE_CHECKING:
    from backends.mlx.constraint import Constraint
    from backends.mlx.speculative import Drafter


class RowOutput(Protocol):
    """The per-choice text pipeline (`backends.mlx.output.ChoiceOutput`)."""

    @property
    def stopped(self) -> bool: ...

    def feed(self, step: Any) -> GenerationChunk | None: ...

    def finish(self, reason: Literal["stop", "length"]) -> GenerationChunk: ...


@dataclass(eq=False)
class Row:
    """One choice of a job: one row of the decode batch once admitted."""

    job: Job
    choice: int
    params: SamplingParams
    output: RowOutput
    generated: int = 0
    finished: bool = False
    tokens: list[int] = field(default_factory=list)  # generated so far (for the prefix cache)
    constraint: Constraint | None = None  # the grammar its tokens must follow
    drafter: Drafter | None = None  # its speculative draft source (`speculative.py`), if any


@dataclass
class JobTimings:
    """`time.perf_counter()` readings; zero until reached."""

    submitted: float = field(default_factory=time.perf_counter)
    prefill_started: float = 0.0
    prefill_finished: float = 0.0
    first_token: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True)
class JobDone:
    """The last event of a job: every row has finished."""

    prompt_tokens: int
    completion_tokens: int
    timings: JobTimings
    peak_memory: int = 0
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache


Event = GenerationChunk | JobDone | BaseException


class Job:
    """One request: a prompt, `n` rows that share it, and the limits they obey.

    `completion_tokens` counts every token a row sampled, the end-of-sequence token
    included (it was generated and paid for). `bench` rows never see EOS (it is
    banned in their sampling) and run to `max_tokens`.
    """

    def __init__(
        self,
        prompt: Sequence[int],
        params: Sequence[SamplingParams],
        outputs: Sequence[RowOutput],
        *,
        max_tokens: int,
        eos_ids: frozenset[int],
        bench: bool = False,
        constraints: Sequence[Constraint | None] = (),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if len(params) != len(outputs) or not params:
            raise ValueError("a job needs one SamplingParams and one output per row")
        if constraints and len(constraints) != len(params):
            raise ValueError("a job's constraints, when given, are one per row")
        self.prompt = list(prompt)
        self.rows = [Row(self, choice, p, o) for choice, (p, o) in enumerate(zip(params, outputs))]
        for row, constraint in zip(self.rows, constraints):
            row.constraint = constraint
        self.max_tokens = max_tokens
        self.eos_ids = frozenset() if bench else eos_ids
        self.bench = bench
        self.loop = loop or asyncio.get_running_loop()
        self.queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self.timings = JobTimings()
        self.cached_tokens = 0  # engine thread: prompt tokens served by the prefix cache
        self.rows_left = len(self.rows)
        self.cancelled = False  # engine thread: stop working on it
        self.done = False  # engine thread: JobDone (or an error) was posted
        self.outbox: list[Event] = []  # engine thread: events not yet delivered

    @property
    def completion_tokens(self) -> int:
        return sum(row.generated for row in self.rows)

    def __repr__(self) -> str:
        return f"<Job rows={len(self.rows)} prompt={len(self.prompt)} max_tokens={self.max_tokens}>"


def deliver(batch: list[tuple[asyncio.Queue[list[Event]], list[Event]]]) -> None:
    """Runs on the event loop: hand each job its events of one engine step."""
    for queue, events in batch:
        queue.put_nowait(events)
