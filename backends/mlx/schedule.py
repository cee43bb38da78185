"""The engine's two scheduling decisions: which waiting jobs prefill together, and
how its time splits between prefill chunks and decode steps.

Grouping. Jobs waiting at the same time are prefilled as one group (`batch.Prefill`),
oldest first: the oldest always starts a group, and each later one joins while
the batch has room for its rows and the group stays dense. Every job of a group
runs as many columns as its longest prompt (after cached prefixes), so the
padding is compute spent on nothing; it may be a fifth of the group's work, or
a quarter chunk whatever the share: that much costs less than the two forward
passes at least (chunk and last token) that a separate group would add. A job
that does not fit waits for the next group, which starts as soon as this one
ends.

Time split (`DecodeDebt`). While requests wait for their first token, prefill
runs chunk after chunk, and running streams get a decode step only when they are
owed one: each chunk of `t` seconds owes them

    max(t * floor / (1 - floor), min(t * running / waiting, one decode step))

seconds of decoding (rows running and rows waiting, a waiting job's rows
included). The fair term gives every row an equal share of the engine, so a
burst of newcomers is prefilled nearly back to back beside a few streams, and
many streams beside one newcomer still decode a step per chunk; `floor` is the
share running streams keep however long the queue (their speed never falls
below that fraction); and a newcomer never waits behind more than one decode
step per chunk unless the floor demands it, which is how the engine worked
before this rule. Decode time beyond what was owed is credit (one step at
most), and the account is cleared when nobody waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends.mlx.jobs import Job, Row

# A group's padding may be this share of its padded work (else the job waits).
MAX_PADDING_SHARE = 0.2
# A chunk gives each job of a group at least this many columns.
MIN_CHUNK_WIDTH = 8


@dataclass(eq=False)
class Waiting:
    """A job (or one row of it, where the cache cannot batch) waiting for prefill.

    `cache`/`cached` hold its prefix-cache lookup once one was made, so a job
    that had to wait for a later group is not looked up (and counted) twice."""

    job: Job
    rows: list[Row]
    cache: list[Any] | None = None
    cached: int = 0
    looked_up: bool = False

    @property
    def body(self) -> int:
        """Prompt tokens its prefill still has to run, the last one aside."""
        return max(len(self.job.prompt) - 1 - self.cached, 0)


def joins(group: Sequence[Waiting], candidate: Waiting, step_size: int) -> bool:
    """Whether `candidate` keeps `group` dense enough to share its forward passes."""
    if len(group) + 1 > max(1, step_size // MIN_CHUNK_WIDTH):
        return False
    bodies = [waiting.body for waiting in group] + [candidate.body]
    padded = max(bodies) * len(bodies)
    return padded - sum(bodies) <= max(MAX_PADDING_SHARE * padded, step_size / 4)


class DecodeDebt:
    """Decode seconds owed to running streams before the next prefill chunk (see above)."""

    def __init__(self, floor: float) -> None:
        if not 0 < floor < 1:
            raise ValueError("the decode floor is a share of the engine's time, between 0 and 1")
        self.floor = floor
        self.owed = 0.0
        self.step_seconds = 0.0  # the last decode step's duration

    @property
    def prefill_may_run(self) -> bool:
        return self.owed <= 0

    def prefilled(self, seconds: float, running: int, waiting: int) -> None:
        """A chunk of `seconds` ran beside `running` rows while `waiting` rows wait."""
        if not running:
            return
        fair = seconds * running / max(waiting, 1)
        if self.step_seconds:
            fair = min(fair, self.step_seconds)
        self.owed += max(seconds * self.floor / (1 - self.floor), fair)

    def decoded(self, seconds: float) -> None:
        self.step_seconds = seconds
        self.owed = max(self.owed, 0.0) - seconds

    def waited(self, seconds: float) -> None:
        """The last decode step's forward pass took `seconds` more to finish."""
        self.step_seconds += seconds
        self.owed -= seconds

    def clear(self) -> None:
        self.owed = 0.0
