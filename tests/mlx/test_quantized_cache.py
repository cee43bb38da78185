"""The quantized KV cache (`kv_bits`): the batched cache against mlx-lm's per-sequence
`QuantizedKVCache` row by row, the same greedy text as full precision through the engine
and over HTTP (stream, n > 1, prefix-cache hits), the prefix cache's cap in quantized
bytes, and options that fail at start-up or at load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

mx = pytest.importorskip("mlx.core")

from mlx_lm import load
from mlx_lm.models.cache import QuantizedKVCache, RotatingKVCache

from backends.mlx.backend import MLXBackend
from backends.mlx.engine import Engine
from backends.mlx.quantized_cache import (
    BatchQuantizedKVCache,
    KVCacheConfigError,
    KVQuantization,
    QuantizedCache,
    check_quantization,
    new_cache,
)
from gateway.backend import ModelSpec
from gateway.config import ConfigError, ModelConfig
from gateway.errors import ModelLoadFailed
from tests.mlx.test_engine import GREEDY, make_job, run_job, start_engine
from tests.support.apps import mlx_app
from tests.support.mlx_models import TINY_LLAMA_HEAD64, Script, build_tiny_llama

KINDS = (KVQuantization(8), KVQuantization(4), KVQuantization(4, 32))
# 63 words and the runner-up make the scripted vocabulary 448 wide: a head dim of 7 x 64.
STORY = Script(tuple(f" w{i}" for i in range(63)), loop=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random 2-layer llama with head dim 64 and two query heads per KV head."""
    path = build_tiny_llama(tmp_path_factory.mktemp("tiny-head64"), shape=TINY_LLAMA_HEAD64)
    loaded, _ = load(str(path))
    return loaded


def reference(model: Any, prompt: list[int], kv: KVQuantization) -> list[QuantizedKVCache]:
    """mlx-lm's own per-sequence quantized cache after `prompt`."""
    cache = [QuantizedKVCache(kv.group_size, kv.bits) for _ in model.layers]
    mx.eval(model(mx.array(prompt)[None], cache=cache))
    return cache


def forward(model: Any, cache: list[Any], tokens: list[list[int]]) -> mx.array:
    """Last-position logits of one forward pass, a row per token list."""
    logits = model(mx.array(tokens), cache=cache)[:, -1, :]
    mx.eval(logits)
    return logits


def assert_rows_match(
    model: Any, batch: list[Any], rows: list[list[QuantizedKVCache]], tokens: list[int]
) -> None:
    """One decode step: each batch row gives its own cache's logits, and holds its bytes."""
    logits = forward(model, batch, [[token] for token in tokens])
    for index, (cache, token) in enumerate(zip(rows, tokens)):
        alone = forward(model, cache, [[token]])
        assert mx.allclose(logits[index], alone[0], atol=1e-5).item()
        for layer, own in zip(batch, cache):
            extracted = layer.extract(index)
            assert extracted.offset == own.offset
            for mine, theirs in zip(
                (*extracted.keys, *extracted.values), (*own.keys_and_values()[0], *own.keys_and_values()[1])
            ):
                assert mx.array_equal(mine, theirs).item()


PROMPTS = ([5, 6, 7, 8, 9, 10, 11], [20, 21, 22], list(range(30, 42)))


@pytest.mark.parametrize("kv", KINDS, ids=str)
def test_a_merged_batch_decodes_each_row_as_its_own_cache(model: Any, kv: KVQuantization) -> None:
    rows = [reference(model, prompt, kv) for prompt in PROMPTS]
    batch = [
        BatchQuantizedKVCache.merge(layers) for layers in zip(*(reference(model, p, kv) for p in PROMPTS))
    ]
    assert [layer.left_padding.tolist() for layer in batch] == [[5, 9, 0]] * 2
    assert batch[0].offset.tolist() == [7, 3, 12] and batch[0].size() == 12
    for step in range(3):
        assert_rows_match(model, batch, rows, [40 + step, 50 + step, 60 + step])
    assert batch[0].offset.tolist() == [10, 6, 15]


@pytest.mark.parametrize("kv", KINDS[:2], ids=str)
def test_extend_and_filter_keep_every_row_exact(model: Any, kv: KVQuantization) -> None:
    rows = [reference(model, prompt, kv) for prompt in PROMPTS]
    first = [
        BatchQuantizedKVCache.merge(layers) for layers in zip(*(reference(model, p, kv) for p in PROMPTS[:2]))
    ]
    assert_rows_match(model, first, rows[:2], [3, 4])
    longer = [BatchQuantizedKVCache.merge([layer]) for layer in reference(model, PROMPTS[2], kv)]
    for mine, theirs in zip(first, longer):
        mine.extend(theirs)  # the newcomer is longer: the running rows get more left padding
    assert_rows_match(model, first, rows, [5, 6, 7])
    for layer in first:
        layer.filter(mx.array([0, 2]))
    kept = [rows[0], rows[2]]
    assert_rows_match(model, first, kept, [8, 9])
    short = reference(model, [70, 71], kv)
    for mine, layer in zip(first, short):
        mine.extend(QuantizedCache.merge([layer]))  # shorter than the running rows
    assert_rows_match(model, first, [*kept, short], [10, 11, 12])


@pytest.mark.parametrize("kv", KINDS[:2], ids=str)
def test_rolling_back_a_different_count_per_row_equals_trimming_each(model: Any, kv: KVQuantization) -> None:
    """Speculative decoding's roll-back: after a 4-token verify pass, `prepare(right_padding=...)`
    and `finalize()` drop each row's rejected tail; the rows then decode as trimmed caches do."""
    rows = [reference(model, prompt, kv) for prompt in PROMPTS]
    batch = [
        BatchQuantizedKVCache.merge(layers) for layers in zip(*(reference(model, p, kv) for p in PROMPTS))
    ]
    drafts = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    forward(model, batch, drafts)
    rejected = [0, 2, 3]
    for cache, draft, count in zip(rows, drafts, rejected):
        forward(model, cache, [draft])
        for layer in cache:
            layer.trim(count)
    for layer in batch:
        layer.prepare(right_padding=rejected)
        layer.finalize()
    assert batch[0].offset.tolist() == [11, 5, 13]
    assert_rows_match(model, batch, rows, [13, 14, 15])
    for layer in batch:
        assert layer.trim(2) == 2
    for cache in rows:
        for layer in cache:
            layer.trim(2)
    assert_rows_match(model, batch, rows, [16, 17, 18])


def test_rows_past_the_first_256_tokens_grow_and_join_exactly(model: Any) -> None:
    kv = KINDS[1]
    prompts = [list(range(3, 257)), [7, 8, 9], [(5 * i) % 400 + 3 for i in range(300)]]
    rows = [reference(model, prompt, kv) for prompt in prompts]
    batch = [
        BatchQuantizedKVCache.merge(layers) for layers in zip(*(reference(model, p, kv) for p in prompts[:2]))
    ]
    for step in range(3):  # 254 tokens fill the merged buffer exactly: the first step grows it
        assert_rows_match(model, batch, rows[:2], [10 + step, 20 + step])
    assert batch[0].size() == 257 and batch[0].keys[0].shape[2] == 254 + 256
    longer = [BatchQuantizedKVCache.merge([layer]) for layer in reference(model, prompts[2], kv)]
    for mine, theirs in zip(batch, longer):
        mine.extend(theirs)
    assert_rows_match(model, batch, rows, [30, 31, 32])
    assert batch[0].size() == 301


@pytest.mark.parametrize("side", ["left", "right"])
def test_prompts_prefilled_together_from_empty_caches_equal_each_alone(model: Any, side: str) -> None:
    """Batched prefill: fresh caches merged (empty), the prompts padded on one side; right
    padding is rolled round to the left by `finalize`, as mlx-lm's batch generator does."""
    kv = KINDS[0]
    rows = [reference(model, prompt, kv) for prompt in PROMPTS]
    batch = [QuantizedCache.merge(list(layers)) for layers in zip(*(new_cache(model, kv) for _ in PROMPTS))]
    assert all(layer.empty() and layer.size() == 0 for layer in batch)
    longest = max(map(len, PROMPTS))
    padding = [longest - len(prompt) for prompt in PROMPTS]
    if side == "left":
        tokens = [[0] * pad + prompt for pad, prompt in zip(padding, PROMPTS)]
        for layer in batch:
            layer.prepare(left_padding=padding)
    else:
        tokens = [prompt + [0] * pad for pad, prompt in zip(padding, PROMPTS)]
        for layer in batch:
            layer.prepare(right_padding=padding)
    forward(model, batch, tokens)
    for layer in batch:
        layer.finalize()
    assert batch[0].offset.tolist() == [len(prompt) for prompt in PROMPTS]
    assert_rows_match(model, batch, rows, [3, 4, 5])


def test_a_lone_row_round_trips_through_the_batch(model: Any) -> None:
    kv = KINDS[0]
    cache = new_cache(model, kv)
    assert all(type(layer) is QuantizedCache for layer in cache)
    forward(model, cache, [PROMPTS[0]])
    own = reference(model, PROMPTS[0], kv)
    batch = [type(layer).merge([layer]) for layer in cache]  # how the engine batches a row
    assert all(isinstance(layer, BatchQuantizedKVCache) and layer.size() == 7 for layer in batch)
    assert_rows_match(model, batch, [own], [3])
    back = [layer.extract(0) for layer in batch]
    assert mx.allclose(forward(model, back, [[4]]), forward(model, own, [[4]]), atol=1e-5).item()


@pytest.mark.parametrize("kv", KINDS, ids=str)
def test_quantized_bytes_per_token(model: Any, kv: KVQuantization) -> None:
    """float32 keys take 4 bytes a channel; quantized, bits / 8 plus a float32 scale and
    bias per group (8-bit: 3.6x fewer bytes, 4-bit: 6.4x with groups of 64)."""
    plain = new_cache(model)
    quantized = new_cache(model, kv)
    forward(model, plain, [list(range(3, 40))])
    forward(model, quantized, [list(range(3, 40))])
    ratio = sum(layer.nbytes for layer in quantized) / sum(layer.nbytes for layer in plain)
    assert ratio == pytest.approx((kv.bits / 8 + 2 * 4 / kv.group_size) / 4)
    batch = [type(layer).merge([layer, layer]) for layer in quantized]
    per_token = sum(layer.nbytes for layer in batch) / (2 * batch[0].keys[0].shape[2])
    assert per_token == pytest.approx(
        sum(layer.nbytes for layer in quantized) / quantized[0].keys[0].shape[2]
    )


def test_models_that_cannot_be_quantized_are_refused(model: Any) -> None:
    cache = new_cache(model)
    forward(model, cache, [[1, 2]])
    check_quantization(cache, KVQuantization(8, 64))
    with pytest.raises(KVCacheConfigError, match=r"kv_group_size = 128 does not divide .* head dimension 64"):
        check_quantization(cache, KVQuantization(8, 128))
    with pytest.raises(KVCacheConfigError, match="RotatingKVCache"):
        check_quantization([*cache, RotatingKVCache(max_size=8)], KVQuantization(8))


# --- through the engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def story(scripted_model: Callable[[Script], Path]) -> Path:
    return scripted_model(STORY)


@pytest.fixture(scope="module")
def story_engines(story: Path) -> Iterator[dict[str, Engine]]:
    """The scripted story model at full precision, 8-bit and 4-bit, each with a prefix cache."""
    engines = {
        str(kv): start_engine(story, prefill_step_size=16, prefix_cache_bytes=4 << 20, kv_quantization=kv)
        for kv in (None, KINDS[0], KINDS[1])
    }
    yield engines
    for engine in engines.values():
        engine.stop()


def generate(
    engine: Engine, jobs: list[tuple[list[int], int]], max_tokens: int = 80
) -> list[tuple[list[list[int]], int]]:
    """(tokens of each row, cached tokens) per (prompt, n), all submitted at once (one batch)."""

    async def go() -> list[tuple[list[list[int]], int]]:
        made = [make_job(engine, prompt, GREEDY, n=n, max_tokens=max_tokens) for prompt, n in jobs]
        done = await asyncio.gather(*(run_job(engine, job) for job, _ in made))
        return [([out.tokens for out in outs], end.cached_tokens) for (_, outs), (_, end) in zip(made, done)]

    return asyncio.run(go())


def test_greedy_tokens_equal_full_precision_in_a_batch_and_on_prefix_hits(
    story_engines: dict[str, Engine],
) -> None:
    base = [3 + (5 * i) % 300 for i in range(70)]
    rounds = [
        [(base, 1)],  # cold, alone
        [(base + [7, 8], 3), (base[:40] + [9], 1), (list(range(100, 121)), 2)],  # hits and a miss, batched
        [(base + [7, 8, 11], 1)],  # a deeper hit
    ]
    results = {name: [generate(engine, jobs) for jobs in rounds] for name, engine in story_engines.items()}
    plain = results["None"]
    assert all(len(tokens) == 80 for round_ in plain for rows, _ in round_ for tokens in rows)
    for name, result in results.items():
        assert [[rows for rows, _ in round_] for round_ in result] == [
            [rows for rows, _ in r] for r in plain
        ], name
        hits = [cached for round_ in result[1:] for _, cached in round_]
        assert hits[0] >= 70 and hits[1] == 40 and hits[2] == 0 and hits[3] >= 72, name
        stats = story_engines[name].stats()
        assert 0 < stats["prefix_cache_bytes"] <= stats["prefix_cache_capacity_bytes"]


def test_the_cap_counts_quantized_bytes_and_holds_more_entries(story: Path) -> None:
    cap = 4 << 20
    held = {}
    for kv in (None, KINDS[0], KINDS[1]):
        engine = start_engine(story, prefix_cache_bytes=cap, kv_quantization=kv)
        try:
            for index in range(36):  # no two prompts share a first token: one entry each
                prompt = [3 + index, *range(40, 100)]
                generate(engine, [(prompt, 1)], max_tokens=1)
                assert engine.stats()["prefix_cache_bytes"] <= cap
            stats = engine.stats()
            held[str(kv)] = stats["prefix_cache_entries"]
            assert stats["prefix_cache_bytes"] > cap * 0.6  # evicting, not refusing
        finally:
            engine.stop()
    # float32: 3.6x fewer bytes per token at 8 bits, 6.4x at 4 (a float16 model: ~1.9x and ~3.6x)
    assert held["None"] >= 1
    assert held[str(KINDS[0])] >= 3 * held["None"]
    assert held[str(KINDS[1])] >= 5.5 * held["None"]


# --- options -------------------------------------------------------------------------------


def spec(path: Path, **options: Any) -> ModelSpec:
    return ModelSpec("m", ModelConfig(backend="mlx", path=str(path), options=options))


def test_bad_kv_options_fail_start_up(story: Path) -> None:
    bad = (
        {"kv_bits": 3},
        {"kv_bits": 16},
        {"kv_bits": 8, "kv_group_size": 48},
        {"kv_bits": "8"},
        {"kv_group_size": 32},
    )
    for options in bad:
        with pytest.raises(ConfigError, match=r'models."m".options.kv_'):
            MLXBackend(spec(story, **options))
    with pytest.raises(ConfigError, match="kv_bits"):
        mlx_app({"q": {"backend": "mlx", "path": str(story), "options": {"kv_bits": 2}}})
    MLXBackend(spec(story, kv_bits=4, kv_group_size=32))


def test_a_group_size_that_does_not_divide_the_head_dim_fails_the_load(tmp_path: Path) -> None:
    path = build_tiny_llama(tmp_path / "tiny", shape=TINY_LLAMA_HEAD64)
    backend = MLXBackend(spec(path, kv_bits=8, kv_group_size=128))
    with pytest.raises(ModelLoadFailed, match=r'models."m".options.kv_group_size = 128 does not divide'):
        asyncio.run(backend.load())


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(story: Path) -> Any:
    model = {"backend": "mlx", "path": str(story), "defaults": {"temperature": 0.0}}
    return mlx_app(
        {
            "story": model,
            "story-q8": {**model, "options": {"kv_bits": 8}},
            "story-q4": {**model, "options": {"kv_bits": 4, "kv_group_size": 32}},
        }
    )


def test_the_openai_sdk_gets_the_same_text_from_quantized_models(client: openai.OpenAI) -> None:
    turn = [{"role": "system", "content": "Tell the story. " * 12}, {"role": "user", "content": "Go on."}]
    answers: dict[str, Any] = {}
    extra = {"enable_thinking": False}
    for model in ("story", "story-q8", "story-q4"):
        whole = client.chat.completions.create(
            model=model, messages=turn, max_tokens=40, n=2, extra_body=extra
        )
        stream = client.chat.completions.create(
            model=model, messages=turn, max_tokens=40, stream=True, extra_body=extra
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        texts = [choice.message.content for choice in whole.choices]
        follow = [*turn, {"role": "assistant", "content": texts[0]}, {"role": "user", "content": "More."}]
        again = client.chat.completions.create(model=model, messages=follow, max_tokens=40, extra_body=extra)
        answers[model] = (texts, streamed, again.choices[0].message.content)
        assert again.usage.prompt_tokens_details.cached_tokens > 40  # the first turn came from the cache
        stats = client.models.retrieve(model).model_extra["backend_stats"]
        assert stats["prefix_cache_bytes"] <= stats["prefix_cache_capacity_bytes"]
    texts, streamed, again = answers["story"]
    assert texts[0] == texts[1] == streamed and texts[0] == " ".join(f"w{i}" for i in range(40)) and again
    assert answers["story-q8"] == answers["story-q4"] == answers["story"]
