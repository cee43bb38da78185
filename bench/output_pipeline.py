"""Per-token cost of the MLX backend's output pipeline (`ChoiceOutput.feed`).

Feeds a ~2,000-token text through `ChoiceOutput` in several configurations
and prints the median µs/token over several runs (the token table is warm
after the first run, as it is on a serving model). The mlx-lm streaming
detokenizer alone is timed as a reference point. Nothing is downloaded: the
tokenizer is the offline test tokenizer (byte-level BPE, Qwen-like).

    .venv/bin/python bench/output_pipeline.py [--tokens 2000] [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlx_lm.tokenizer_utils import load

from backends.mlx.output import ChoiceOutput, TokenStep
from tests.support.mlx_tokenizer import build_tokenizer, corpus

STOPS = ["\n\nUser:", "<|endoftext|>", "###", "THE END"]


def make_steps(tokenizer: Any, count: int, around: tuple[str, str, str] | None = None) -> list[TokenStep]:
    """`count` tokens of prose/code/JSON, with made-up logprobs and 5 alternatives each.

    With `around` = (head, middle, tail), the text is head + first half + middle
    + second half + tail (e.g. a reasoning block, then content and a tool call).
    """
    body = tokenizer.encode("".join(islice(corpus(8192, seed=1), 400)), add_special_tokens=False)
    if around is None:
        tokens = body[:count]
    else:
        head, middle, tail = (tokenizer.encode(s, add_special_tokens=False) for s in around)
        half = (count - len(head) - len(middle) - len(tail)) // 2
        tokens = head + body[:half] + middle + body[half : 2 * half] + tail
    return [TokenStep(t, -0.5, [(t, -0.5), (11, -1.0), (12, -2.0), (13, -3.0), (14, -4.0)]) for t in tokens]


def time_feed(tokenizer: Any, steps: list[TokenStep], runs: int, **options: Any) -> tuple[float, float]:
    """(median µs/token over warm runs, µs/token of the first run)."""
    per_token = []
    for _ in range(runs + 1):
        output = ChoiceOutput(tokenizer, **options)
        start = time.perf_counter_ns()
        for step in steps:
            output.feed(step)
        output.finish("stop")
        per_token.append((time.perf_counter_ns() - start) / 1000 / len(steps))
    return statistics.median(per_token[1:]), per_token[0]


def time_detokenizer(tokenizer: Any, steps: list[TokenStep], runs: int) -> float:
    per_token = []
    for _ in range(runs):
        detokenizer = tokenizer.detokenizer
        start = time.perf_counter_ns()
        for step in steps:
            detokenizer.add_token(step.token)
            _ = detokenizer.last_segment
        detokenizer.finalize()
        per_token.append((time.perf_counter_ns() - start) / 1000 / len(steps))
    return statistics.median(per_token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        tokenizer = load(build_tokenizer(directory, vocab_size=4096))
    plain = make_steps(tokenizer, args.tokens)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    marked = make_steps(tokenizer, args.tokens, ("<think>\n", "\n</think>\n\n", "\n" + call))

    cases: list[tuple[str, list[TokenStep], dict[str, Any]]] = [
        ("plain", plain, {}),
        ("4 stop strings", plain, {"stop": STOPS}),
        ("logprobs, top 5", plain, {"logprobs": True, "top_logprobs": 5}),
        ("stops + logprobs top 5", plain, {"stop": STOPS, "logprobs": True, "top_logprobs": 5}),
        ("half reasoning, half content + tool call", marked, {"parse_tools": True}),
        (
            "same + stops + logprobs top 5",
            marked,
            {"parse_tools": True, "stop": STOPS, "logprobs": True, "top_logprobs": 5},
        ),
    ]
    print(f"{len(plain)} tokens, median of {args.runs} warm runs (first run in brackets: token table cold)")

    def report(name: str, value: float, extra: str = "") -> None:
        print(f"  {name:<58} {value:6.2f} µs/token {extra}")

    report("mlx-lm BPE streaming detokenizer alone", time_detokenizer(tokenizer, plain, args.runs))
    for name, steps, options in cases:
        warm, cold = time_feed(tokenizer, steps, args.runs, **options)
        report(f"ChoiceOutput: {name}", warm, f"[{cold:.2f}]")


if __name__ == "__main__":
    main()
