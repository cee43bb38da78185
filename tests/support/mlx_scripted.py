"""Scripted models: real mlx-lm llama checkpoints whose output is known exactly.

Design. A scripted model emits a fixed token sequence (its `Script`) greedily,
whatever the prompt, with logits known in closed form, so tests can assert exact
text, reasoning, tool calls, stop handling, UTF-8 holdback and logprobs.

* Each script token is one vocabulary entry: markup (`<think>`, `<tool_call>`,
  `<|im_end|>`...) uses the tokenizer's own ids; any other string (a word, a
  whole JSON tool call) or raw byte string (half a UTF-8 character) is appended
  to the byte-level vocabulary, so both `tokenizer.decode` and mlx-lm's
  `BPEStreamingDetokenizer` decode it exactly.
* The next token is a function of the (previous, current) token pair. One
  llama layer does it: the embedding is a one-hot of the current token plus a
  constant; a single attention head, with constant queries and keys whose RoPE
  phases peak at distance one, attends only to the previous position (the
  softmax saturates to exactly 1.0 in float32) and copies its one-hot into a
  second block of the residual stream; the MLP is zero. The residual therefore
  always has the same RMS, and the lm_head reads logits = A[:, cur] + B[:, prev]
  straight off the two blocks.
* For every state on the script the logits are exactly: the successor
  `SUCCESSOR_LOGIT`, the runner-up token `RUNNER_UP` (" maybe", never part of a
  script) `RUNNER_UP_LOGIT`, every other token 0. `expected_logprobs` gives the
  resulting log-probabilities.
* A token outside the script (so the end of any prompt) is followed by the
  script's first token; the two generation-prompt endings of the test chat
  template (`<think>\\n` and `</think>\\n\\n`) are checked to start the script
  too. A repeated token is fine when its predecessor tells its occurrences apart
  (two `<tool_call>` blocks, commas in a list); a script that needs more context
  than that raises ValueError when built.
* `loop=True` makes the last token lead back to the first: the chain never ends,
  for max_tokens/length tests. Otherwise a script ends with EOS (`<|im_end|>`).

One model per scenario: `build_scripted_model(dir, SCENARIOS["tool_call"])`
takes well under a second; in tests, the session fixture `scripted_model` of
tests/mlx/conftest.py builds each on first use: `scripted_model("tool_call")`.
`script_info(path)` gives the token ids and runner-up id of a built model.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support.mlx_tokenizer import EOS, MARKUP_TOKENS, SPECIAL_TOKENS, build_tokenizer, byte_level

SUCCESSOR_LOGIT = 10.0
RUNNER_UP_LOGIT = 8.0
RUNNER_UP = " maybe"
SCRIPTED_VOCAB = 384
_ROPE_BASE = 2.0
_ATTENTION_MARGIN = 200.0  # score gap between the previous position and any other
_EPS = 1e-6
_MAX_POSITIONS = 32768
_PROMPT_ENDINGS = ("<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n")

CALL_PARIS = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
CALL_LONDON = '{"name": "get_time", "arguments": {"timezone": "Europe/London"}}'

Token = str | bytes


@dataclass(frozen=True)
class Script:
    """What a scripted model says: tokens in order; `loop` repeats them forever."""

    tokens: tuple[Token, ...]
    loop: bool = False

    @property
    def text(self) -> str:
        """The raw decoded text of one pass, markup included."""
        return b"".join(t if isinstance(t, bytes) else t.encode() for t in self.tokens).decode()


SCENARIOS: dict[str, Script] = {
    "plain": Script(("Hello", " there", "!", EOS)),
    "reasoning": Script(("The", " user", " greets", " me", ".", "</think>", "Hi", "!", EOS)),
    "think_tags": Script(("<think>", "Hmm", ".", "</think>", "Hi", "!", EOS)),
    "tool_call": Script(("<tool_call>", CALL_PARIS, "</tool_call>", EOS)),
    "call_without_marker": Script((CALL_PARIS, "</tool_call>", EOS)),
    "two_tool_calls": Script(
        ("<tool_call>", CALL_PARIS, "</tool_call>", "<tool_call>", CALL_LONDON, "</tool_call>", EOS)
    ),
    "text_then_tool_call": Script(
        ("Let", " me", " check", ".", "<tool_call>", CALL_PARIS, "</tool_call>", EOS)
    ),
    "reasoning_tool_call": Script(
        ("I", " need", " the", " weather", ".", "</think>", "<tool_call>", CALL_PARIS, "</tool_call>", EOS)
    ),
    "stop": Script(("Counting", ":", " one", ",", " two", ",", " three", ",", " four", ".", EOS)),
    "utf8": Script(("Caf", b"\xc3", b"\xa9", " au", " lait", b" \xf0\x9f", b"\x99\x82", EOS)),
    "endless": Script(("la",), loop=True),
}


@dataclass(frozen=True)
class ScriptedLogprobs:
    successor: float
    runner_up: float
    other: float


def expected_logprobs(vocab_size: int) -> ScriptedLogprobs:
    """Exact log-probabilities of the tokens at any step on the script."""
    log_z = math.log(math.exp(SUCCESSOR_LOGIT) + math.exp(RUNNER_UP_LOGIT) + (vocab_size - 2))
    return ScriptedLogprobs(SUCCESSOR_LOGIT - log_z, RUNNER_UP_LOGIT - log_z, -log_z)


def script_info(directory: str | Path) -> dict:
    """The build record written next to the weights (ids, vocab size, runner-up id)."""
    return json.loads((Path(directory) / "script.json").read_text())


def _transition_tables(
    ids: list[int], loop: bool, runner: int, vocab: int, starts: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Solve A (by current token) and B (by previous token) so every state hits its successor."""

    def pattern(successor: int) -> np.ndarray:
        row = np.zeros(vocab, dtype=np.float64)
        row[successor], row[runner] = SUCCESSOR_LOGIT, RUNNER_UP_LOGIT
        return row

    # (prev, cur, next); prev None means "some token outside the script".
    states: list[tuple[int | None, int, int]] = []
    for prev, cur in starts:
        states += [(prev, cur, ids[0]), (cur, ids[0], ids[1 % len(ids)])]
    states.append((None, ids[0], ids[1 % len(ids)]))
    for i in range(0 if loop else 1, len(ids) if loop else len(ids) - 1):
        states.append((ids[i - 1], ids[i], ids[(i + 1) % len(ids)]))

    a = np.tile(pattern(ids[0])[:, None], (1, vocab))
    b = np.zeros((vocab, vocab), dtype=np.float64)
    fixed_cur: set[int] = set()
    for prev, cur, successor in states:
        if cur not in fixed_cur:
            fixed_cur.add(cur)
            a[:, cur] = pattern(successor) - (b[:, prev] if prev is not None else 0.0)
            continue
        have = a[:, cur] + (b[:, prev] if prev is not None else 0.0)
        if np.array_equal(have, pattern(successor)):
            continue
        if prev is None or b[:, prev].any():
            raise ValueError(f"script needs more than one token of context at token id {cur}")
        b[:, prev] = pattern(successor) - a[:, cur]
    for prev, cur, successor in states:
        have = a[:, cur] + (b[:, prev] if prev is not None else 0.0)
        if not np.array_equal(have, pattern(successor)):
            raise ValueError(f"script needs more than one token of context at token id {cur}")
    return a, b


@functools.lru_cache(maxsize=4)
def _previous_token_attention(head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Query and key vectors whose RoPE score peaks at distance one by `_ATTENTION_MARGIN`."""
    import mlx.core as mx

    half = head_dim // 2
    # Non-traditional RoPE pairs dimension i with i + half. Key: (1, 0) in every
    # pair. Query: the key turned back by one position (the conjugate of the key
    # turned forward), so the score at distance d is sum_i cos((d - 1) theta_i).
    key = np.concatenate([np.ones(half), np.zeros(half)])
    rope_input = mx.array(key[None, None, None, :].astype(np.float32))
    turned = mx.fast.rope(rope_input, head_dim, traditional=False, base=_ROPE_BASE, scale=1.0, offset=1)
    turned = np.array(turned)[0, 0, 0]
    query = np.concatenate([turned[:half], -turned[half:]]).astype(np.float64)
    theta = _ROPE_BASE ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    distances = np.arange(1, _MAX_POSITIONS, dtype=np.float64)
    # Smallest score gap between distance one and any other distance in range.
    gap = float(np.min(np.sum(1 - np.cos(distances[:, None] * theta[None, :]), axis=1)))
    amplitude = math.sqrt(_ATTENTION_MARGIN * math.sqrt(head_dim) / gap)
    return query * amplitude, key * amplitude


def build_scripted_model(directory: str | Path, script: Script | tuple[Token, ...]) -> Path:
    """Write a scripted llama checkpoint (config, weights, tokenizer, script.json)."""
    import mlx.core as mx

    if not isinstance(script, Script):
        script = Script(tuple(script))
    if RUNNER_UP in script.tokens:
        raise ValueError(f"{RUNNER_UP!r} is the runner-up token and cannot be part of a script")
    if not script.tokens or (not script.loop and script.tokens[-1] != EOS):
        raise ValueError("a script ends with EOS unless it loops")
    directory = Path(directory)
    build_tokenizer(directory, vocab_size=SCRIPTED_VOCAB, extra_tokens=[*script.tokens, RUNNER_UP])
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()

    def token_id(token: Token) -> int:
        name = (
            token
            if isinstance(token, str) and token in (*MARKUP_TOKENS, *SPECIAL_TOKENS)
            else byte_level(token)
        )
        found = tokenizer.token_to_id(name)
        assert found is not None, token
        return found

    ids = [token_id(t) for t in script.tokens]
    runner = token_id(RUNNER_UP)
    starts = []
    for ending in _PROMPT_ENDINGS:
        tail = tokenizer.encode(ending, add_special_tokens=False).ids
        starts.append((tail[-2], tail[-1]))
    a, b = _transition_tables(ids, script.loop, runner, vocab, starts)

    head_dim = vocab + vocab % 2
    hidden = 2 * vocab + 1
    bias = 2 * vocab
    rms_in = math.sqrt(2 / hidden + _EPS)  # residual = one-hot(cur) + constant
    rms_out = math.sqrt(3 / hidden + _EPS)  # ... + one-hot(prev)
    query, key = _previous_token_attention(head_dim)
    zeros = np.zeros
    weights = {
        "model.embed_tokens.weight": np.hstack([np.eye(vocab), zeros((vocab, vocab)), np.ones((vocab, 1))]),
        "model.layers.0.input_layernorm.weight": np.ones(hidden),
        "model.layers.0.post_attention_layernorm.weight": np.ones(hidden),
        "model.layers.0.self_attn.q_proj.weight": zeros((head_dim, hidden)),
        "model.layers.0.self_attn.k_proj.weight": zeros((head_dim, hidden)),
        "model.layers.0.self_attn.v_proj.weight": zeros((head_dim, hidden)),
        "model.layers.0.self_attn.o_proj.weight": zeros((hidden, head_dim)),
        "model.layers.0.mlp.gate_proj.weight": zeros((2, hidden)),
        "model.layers.0.mlp.up_proj.weight": zeros((2, hidden)),
        "model.layers.0.mlp.down_proj.weight": zeros((hidden, 2)),
        "model.norm.weight": np.ones(hidden),
        "lm_head.weight": np.hstack([a * rms_out, b * rms_out, zeros((vocab, 1))]),
    }
    weights["model.layers.0.self_attn.q_proj.weight"][:, bias] = query * rms_in
    weights["model.layers.0.self_attn.k_proj.weight"][:, bias] = key * rms_in
    weights["model.layers.0.self_attn.v_proj.weight"][np.arange(vocab), np.arange(vocab)] = rms_in
    weights["model.layers.0.self_attn.o_proj.weight"][vocab + np.arange(vocab), np.arange(vocab)] = 1.0
    mx.save_safetensors(
        str(directory / "model.safetensors"),
        {name: mx.array(value.astype(np.float32)) for name, value in weights.items()},
        metadata={"format": "mlx"},
    )
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "intermediate_size": 2,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        "rms_norm_eps": _EPS,
        "rope_theta": _ROPE_BASE,
        "vocab_size": vocab,
        "max_position_embeddings": _MAX_POSITIONS,
        "tie_word_embeddings": False,
        "eos_token_id": token_id(EOS),
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    record = {
        "tokens": ids,
        "loop": script.loop,
        "runner_up": runner,
        "vocab_size": vocab,
        "text": script.text,
    }
    (directory / "script.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))
    return directory
