"""Batched per-row sampling: each parameter does what it says, per row."""

from __future__ import annotations

import math

import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.sampling import RowSpec, SamplerBatch, SamplingParams, row_key

VOCAB = 50


def fixed_logits(rows: int = 1, seed: int = 3) -> mx.array:
    row = mx.random.normal((VOCAB,), key=mx.random.key(seed))
    return mx.broadcast_to(row, (rows, VOCAB))


def log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    total = math.log(sum(math.exp(v - top) for v in values)) + top
    return [v - total for v in values]


def draw(params: list[SamplingParams], logits: mx.array, steps: int = 1) -> list[list[int]]:
    """Tokens per step (rows as columns) from a fresh batch."""
    batch = SamplerBatch(VOCAB, [RowSpec(p, 0) for p in params])
    out = []
    for _ in range(steps):
        sampled = batch.sample(logits)
        out.append(sampled.tokens.tolist())
    return out


def histogram(params: SamplingParams, probs: list[float], rows: int = 4000) -> list[float]:
    """Empirical distribution of one draw per row, each row with its own seed."""
    logits = mx.broadcast_to(mx.log(mx.array(probs)), (rows, len(probs)))
    batch = SamplerBatch(
        len(probs),
        [RowSpec(SamplingParams(**{**params.__dict__, "seed": seed})) for seed in range(rows)],
    )
    tokens = batch.sample(logits).tokens.tolist()
    return [tokens.count(token) / rows for token in range(len(probs))]


PROBS = [0.5, 0.3, 0.15, 0.05]


def test_greedy_rows_take_the_argmax() -> None:
    logits = mx.random.normal((3, VOCAB), key=mx.random.key(1))
    tokens = draw([SamplingParams(temperature=0.0)] * 3, logits)[0]
    assert tokens == mx.argmax(logits, axis=-1).tolist()


def test_temperature_one_follows_the_model_distribution() -> None:
    freq = histogram(SamplingParams(temperature=1.0), PROBS)
    for got, want in zip(freq, PROBS):
        assert abs(got - want) < 0.03


def test_lower_temperature_sharpens() -> None:
    freq = histogram(SamplingParams(temperature=0.5), PROBS)
    sharp = [p**2 for p in PROBS]
    sharp = [p / sum(sharp) for p in sharp]
    for got, want in zip(freq, sharp):
        assert abs(got - want) < 0.03


def test_top_k_keeps_only_the_k_most_likely() -> None:
    freq = histogram(SamplingParams(top_k=2), PROBS)
    assert freq[2] == freq[3] == 0
    assert abs(freq[0] - 0.5 / 0.8) < 0.03


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    freq = histogram(SamplingParams(top_p=0.7), PROBS)
    assert freq[2] == freq[3] == 0 and freq[1] > 0.3
    freq = histogram(SamplingParams(top_p=0.9), PROBS)
    assert freq[3] == 0 and freq[2] > 0.1


def test_top_p_applies_after_top_k_and_min_p_relative_to_best() -> None:
    freq = histogram(SamplingParams(top_k=3, top_p=0.99), PROBS)
    assert freq[3] == 0 and freq[2] > 0
    freq = histogram(SamplingParams(min_p=0.25), PROBS)  # keeps p >= 0.125
    assert freq[3] == 0 and freq[2] > 0.1
    freq = histogram(SamplingParams(min_p=0.5), PROBS)  # keeps p >= 0.25
    assert freq[2] == freq[3] == 0


def test_rows_with_different_truncation_share_a_batch() -> None:
    rows = 3000
    logits = mx.broadcast_to(mx.log(mx.array(PROBS)), (2 * rows, 4))
    params = [SamplingParams(top_k=1, seed=s) for s in range(rows)]
    params += [SamplingParams(seed=s) for s in range(rows)]
    batch = SamplerBatch(4, [RowSpec(p) for p in params])
    tokens = batch.sample(logits).tokens.tolist()
    assert set(tokens[:rows]) == {0}
    assert tokens[rows:].count(3) > 50


def test_logit_bias_and_banned_tokens() -> None:
    logits = fixed_logits()
    best = int(mx.argmax(logits).item())
    assert draw([SamplingParams(temperature=0, logit_bias={7: 100.0})], logits)[0] == [7]
    second = int(mx.argsort(logits[0])[-2].item())
    assert draw([SamplingParams(temperature=0, logit_bias={best: -100.0})], logits)[0] == [second]
    banned = frozenset(range(VOCAB - 1))
    assert draw([SamplingParams(banned_tokens=banned)], fixed_logits(seed=9), steps=20) == [[VOCAB - 1]] * 20


def test_presence_and_frequency_penalties_are_exact() -> None:
    logits = fixed_logits()
    params = SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.25, logprobs=True)
    batch = SamplerBatch(VOCAB, [RowSpec(params)])
    raw = logits[0].tolist()
    first = batch.sample(logits)
    token = first.tokens.item()
    assert first.logprobs.item() == pytest.approx(log_softmax(raw)[token], abs=1e-5)
    second = batch.sample(logits)
    expected = list(raw)
    expected[token] -= 0.5 + 0.25
    want = log_softmax(expected)
    assert second.tokens.item() == max(range(VOCAB), key=expected.__getitem__)
    assert second.logprobs.item() == pytest.approx(want[second.tokens.item()], abs=1e-5)
    if second.tokens.item() == token:
        third_expected = list(raw)
        third_expected[token] -= 0.5 + 0.5
    else:
        third_expected = list(expected)
        third_expected[second.tokens.item()] -= 0.75
    third = batch.sample(logits)
    assert third.logprobs.item() == pytest.approx(log_softmax(third_expected)[third.tokens.item()], abs=1e-5)


def test_repetition_penalty_over_the_last_tokens_of_prompt_and_output() -> None:
    logits = mx.array([[2.0, -1.0, 1.0, 0.5, 3.0]])
    params = SamplingParams(
        temperature=0, repetition_penalty=2.0, repetition_context_size=2, logprobs=True, top_logprobs=5
    )
    batch = SamplerBatch(5, [RowSpec(params, prompt=[0, 1, 4])])  # window: tokens 1 and 4
    first = batch.sample(logits)
    processed = [2.0, -2.0, 1.0, 0.5, 1.5]  # 1: -1*2, 4: 3/2
    assert first.tokens.item() == 0
    assert first.top_logprobs[0].tolist() == pytest.approx(
        sorted(log_softmax(processed), reverse=True), abs=1e-5
    )
    second = batch.sample(logits)  # window now 4, 0
    processed = [1.0, -1.0, 1.0, 0.5, 1.5]
    assert second.tokens.item() == 4
    assert second.logprobs.item() == pytest.approx(log_softmax(processed)[4], abs=1e-5)


def test_logprobs_only_for_rows_that_asked_and_top_sorted() -> None:
    logits = mx.random.normal((3, VOCAB), key=mx.random.key(5))
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0, logprobs=True, top_logprobs=4),
        SamplingParams(temperature=0.7, seed=1, logprobs=True, top_logprobs=2),
    ]
    batch = SamplerBatch(VOCAB, [RowSpec(p) for p in params])
    sampled = batch.sample(logits)
    assert sampled.logprob_rows == (1, 2)
    assert sampled.top_ids.shape == (2, 4)
    for position, row in enumerate((1, 2)):
        want = log_softmax(logits[row].tolist())
        best = sorted(range(VOCAB), key=want.__getitem__, reverse=True)[:4]
        assert sampled.top_ids[position].tolist() == best
        values = sampled.top_logprobs[position].tolist()
        assert values == sorted(values, reverse=True)
        assert values == pytest.approx([want[i] for i in best], abs=1e-5)
        token = sampled.tokens[row].item()
        assert sampled.logprobs[position].item() == pytest.approx(want[token], abs=1e-5)


def run_rows(batch: SamplerBatch, logits_for_step, steps: int) -> list[list[int]]:
    return [batch.sample(logits_for_step(i, len(batch))).tokens.tolist() for i in range(steps)]


def step_logits(step: int, rows: int) -> mx.array:
    return fixed_logits(rows, seed=100 + step)


SEEDED = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, frequency_penalty=0.3)


def test_seeded_row_is_the_same_alone_and_batched() -> None:
    alone = [row[0] for row in run_rows(SamplerBatch(VOCAB, [RowSpec(SEEDED)]), step_logits, 12)]
    others = [
        RowSpec(SamplingParams(temperature=0)),
        RowSpec(SamplingParams(temperature=0.8, top_k=5, repetition_penalty=1.3), prompt=[1, 2, 3]),
        RowSpec(SamplingParams(logit_bias={3: 5.0}, logprobs=True, top_logprobs=3)),
    ]
    batch = SamplerBatch(VOCAB, [others[0], RowSpec(SEEDED), *others[1:]])
    together = [row[1] for row in run_rows(batch, step_logits, 12)]
    assert together == alone


def test_seeded_row_survives_joins_and_leaves() -> None:
    alone = [row[0] for row in run_rows(SamplerBatch(VOCAB, [RowSpec(SEEDED)]), step_logits, 10)]
    batch = SamplerBatch(
        VOCAB, [RowSpec(SamplingParams(temperature=0.5, presence_penalty=1.0)), RowSpec(SEEDED)]
    )
    got = []
    for step in range(10):
        if step == 3:
            batch.extend(
                SamplerBatch(VOCAB, [RowSpec(SamplingParams(repetition_penalty=1.5), prompt=[4] * 30)])
            )
        if step == 6:
            batch.filter([1, 2])
        row = 1 if step < 6 else 0
        got.append(batch.sample(step_logits(step, len(batch))).tokens.tolist()[row])
    assert got == alone


def test_choices_of_one_seed_differ_but_reproduce() -> None:
    params = SamplingParams(temperature=1.5, seed=42)

    def choices() -> list[list[int]]:
        batch = SamplerBatch(VOCAB, [RowSpec(params, choice) for choice in range(3)])
        steps = run_rows(batch, step_logits, 8)
        return [[step[c] for step in steps] for c in range(3)]

    first = choices()
    assert first == choices()
    assert len({tuple(c) for c in first}) == 3
    single = [row[0] for row in run_rows(SamplerBatch(VOCAB, [RowSpec(params, 0)]), step_logits, 8)]
    assert single == first[0]


def test_unseeded_rows_get_fresh_keys() -> None:
    assert row_key(None).tolist() != row_key(None).tolist()
    assert row_key(5).tolist() == row_key(5).tolist()
    assert row_key(5, 1).tolist() != row_key(5, 0).tolist()
    assert row_key(-1).tolist() == row_key(2**64 - 1).tolist()
