"""Shared pieces of the output-pipeline tests: tokenizers, fixtures, helpers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from mlx_lm.tokenizer_utils import (
    BPEStreamingDetokenizer,
    NaiveStreamingDetokenizer,
    TokenizerWrapper,
)
from mlx_lm.tool_parsers import json_tools
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from backends.mlx.output import ChoiceOutput, TokenStep
from gateway.backend import GenerationChunk, ToolCallDelta

MARKERS = ["<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]
CORPUS = [
    "Hello world, this is a test. The weather in Paris is sunny today.",
    "Let me think about this step by step. The answer is 42.",
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
    "def add(x, y):\n    return x + y\n",
] * 4


def build_hf() -> PreTrainedTokenizerFast:
    """A small byte-level BPE (Qwen-like) with ChatML, think and tool-call tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=MARKERS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", clean_up_tokenization_spaces=False
    )


@pytest.fixture(scope="module")
def hf() -> PreTrainedTokenizerFast:
    return build_hf()


def wrap(
    hf: PreTrainedTokenizerFast, detokenizer: Any = BPEStreamingDetokenizer, **tools: Any
) -> TokenizerWrapper:
    options = {
        "tool_parser": json_tools.parse_tool_call,
        "tool_call_start": "<tool_call>",
        "tool_call_end": "</tool_call>",
    }
    return TokenizerWrapper(hf, detokenizer, **(options | tools))


@pytest.fixture(scope="module")
def tok(hf: PreTrainedTokenizerFast) -> TokenizerWrapper:
    return wrap(hf)


@pytest.fixture(scope="module")
def naive(hf: PreTrainedTokenizerFast) -> TokenizerWrapper:
    return wrap(hf, NaiveStreamingDetokenizer)


def ids(tokenizer: Any, *pieces: str) -> list[int]:
    """Token ids of the pieces, each encoded on its own (so a piece never merges with the next)."""
    return [i for piece in pieces for i in tokenizer.encode(piece, add_special_tokens=False)]


def steps(tokens: Sequence[int], top: int = 0) -> list[TokenStep]:
    """Steps with made-up logprobs: token k has logprob -(k+1)/10, alternatives lower."""
    return [
        TokenStep(
            t, -(k + 1) / 10, [(t, -(k + 1) / 10)] + [(a, -(k + 1) / 10 - a - 1) for a in range(top - 1)]
        )
        for k, t in enumerate(tokens)
    ]


def run(
    output: ChoiceOutput, tokens: Sequence[int], reason: str = "stop", top: int = 0
) -> list[GenerationChunk]:
    """All chunks of one choice (the last one is finish's); stops feeding when `stopped`."""
    chunks = []
    for step in steps(tokens, top):
        chunk = output.feed(step)
        if chunk is not None:
            chunks.append(chunk)
        if output.stopped:
            break
    chunks.append(output.finish(reason))  # type: ignore[arg-type]
    return chunks


def shown(output: ChoiceOutput, tokenizer: Any, pieces: Sequence[str]) -> list[str]:
    """The text released while each piece's tokens are fed (until `stopped`)."""
    released = []
    for piece in pieces:
        released.append("")
        for token in ids(tokenizer, piece):
            chunk = output.feed(TokenStep(token))
            released[-1] += chunk.text if chunk else ""
            if output.stopped:
                return released
    return released


def text(chunks: Sequence[GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


def reasoning(chunks: Sequence[GenerationChunk]) -> str:
    return "".join(c.reasoning for c in chunks)


def deltas(chunks: Sequence[GenerationChunk]) -> list[ToolCallDelta]:
    return [d for c in chunks for d in c.tool_calls or []]


def logprob_tokens(chunks: Sequence[GenerationChunk]) -> list[str]:
    return [lp.token for c in chunks for lp in c.logprobs or []]


def no_ids(found: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """The deltas with ids blanked (ids are random), after checking their form."""
    for delta in found:
        assert delta.id is None or re.fullmatch(r"call_[0-9a-f]{24}", delta.id)
    return [msgspec.structs.replace(d, id="ID" if d.id else None) for d in found]
