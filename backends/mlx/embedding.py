"""Embeddings on the engine thread: pooled, normalised final hidden states.

An `EmbedJob` is a list of token-id inputs. The engine runs it a chunk at a
time between decode steps (`Engine._embed_step`): inputs of similar length
(sorted once) are right-padded into one batch of at most `budget` tokens and
run through the model's body (`model.model`: the transformer without its
lm_head, ending in the final norm). A causal model's position never sees the
padding after it, so no mask is needed: the pooling reads real positions only,
the mean over them or the last one. Vectors are L2-normalised, after keeping
the first `dimensions` coordinates when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

import mlx.core as mx
from mlx import nn

Pooling = Literal["mean", "last"]


def hidden_states_of(model: nn.Module) -> Callable[[mx.array], mx.array] | None:
    """The model's body (token ids [B, L] -> final hidden states [B, L, H]), if it has one."""
    body = getattr(model, "model", None)
    return body if callable(body) else None


def pooled(hidden: mx.array, lengths: list[int], pooling: Pooling, dimensions: int | None) -> mx.array:
    """[B, L, H] hidden states -> [B, H'] unit vectors (H' = `dimensions` or H)."""
    hidden = hidden.astype(mx.float32)
    sizes = mx.array(lengths)
    if pooling == "last":
        vectors = hidden[mx.arange(len(lengths)), sizes - 1]
    else:
        positions = mx.arange(hidden.shape[1])[None, :] < sizes[:, None]
        vectors = (hidden * positions[..., None]).sum(axis=1) / sizes[:, None]
    if dimensions is not None:
        vectors = vectors[:, :dimensions]
    norms = mx.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / mx.maximum(norms, 1e-12)


class EmbedJob:
    """One embedding request as the engine sees it; the vectors come back on `future`."""

    def __init__(
        self,
        inputs: list[list[int]],
        pooling: Pooling,
        dimensions: int | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.inputs = inputs
        self.pooling: Pooling = pooling
        self.dimensions = dimensions
        self.loop = loop or asyncio.get_running_loop()
        self.future: asyncio.Future[list[list[float]]] = self.loop.create_future()
        self.order = sorted(range(len(inputs)), key=lambda index: len(inputs[index]))
        self.position = 0  # engine thread: how many of `order` are done
        self.vectors: list[list[float] | None] = [None] * len(inputs)
        self.cancelled = False  # set from the loop when the client is gone

    @property
    def finished(self) -> bool:
        return self.position == len(self.order)

    def step(self, model: nn.Module, budget: int) -> None:
        """Embed the next chunk: as many inputs as fit `budget` padded tokens (one at least)."""
        body = hidden_states_of(model)
        if body is None:
            raise TypeError("this model exposes no hidden states (no `model` body)")
        chunk = [self.order[self.position]]
        longest = len(self.inputs[chunk[0]])
        for index in self.order[self.position + 1 :]:
            wider = max(longest, len(self.inputs[index]))
            if wider * (len(chunk) + 1) > budget:
                break
            chunk.append(index)
            longest = wider
        rows = [self.inputs[index] + [0] * (longest - len(self.inputs[index])) for index in chunk]
        lengths = [len(self.inputs[index]) for index in chunk]
        vectors = pooled(body(mx.array(rows)), lengths, self.pooling, self.dimensions)
        for index, vector in zip(chunk, vectors.tolist(), strict=True):
            self.vectors[index] = vector
        self.position += len(chunk)

    def resolve(self, error: BaseException | None = None) -> None:
        """Hand the vectors (or `error`) to the waiting request, from the engine thread."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, self.vectors, error)
        except RuntimeError:  # the loop is closed: nobody is listening
            pass


def _settle(future: asyncio.Future[Any], vectors: list[Any], error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(vectors)
