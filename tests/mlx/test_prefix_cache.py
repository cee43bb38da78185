"""The prefix cache: the store's bookkeeping, KV sharing without corruption, exact
output on hits, no leaks under cancellation, and the HTTP view (cached_tokens, bench,
backend_stats) through the official openai client."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

mx = pytest.importorskip("mlx.core")

from backends.mlx.engine import Engine
from backends.mlx.prefix_cache import PrefixCache, cache_mode
from backends.mlx.prefix_store import PrefixStore, common_tokens, pack
from backends.mlx.sampling import SamplingParams
from gateway.protocol import ChatCompletionRequest
from tests.mlx.test_engine import GREEDY, make_job, on_thread, run_job, start_engine
from tests.support.apps import mlx_app
from tests.support.mlx_models import script_info

SEEDED = SamplingParams(temperature=1.0, top_p=0.95, seed=11)
BASE = [(7 * i) % 500 + 3 for i in range(75)]

# --- the store ----------------------------------------------------------------------------


def test_packed_keys_sort_like_token_sequences_and_share_prefixes() -> None:
    rng = random.Random(3)
    sequences = [
        [rng.choice([0, 1, 255, 256, 70_000, 2**31]) for _ in range(rng.randint(0, 6))] for _ in range(300)
    ]
    assert sorted(sequences) == sorted(sequences, key=pack)
    for a, b in itertools.pairwise(sequences):
        shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert common_tokens(pack(a), pack(b)) == shared


def test_lookup_finds_the_longest_common_prefix_and_leaves_the_last_token() -> None:
    store: PrefixStore[str] = PrefixStore(10_000)
    store.insert([1, 2, 3, 4, 5], "a", 10)
    store.insert([1, 2, 9, 9], "b", 10)
    store.insert([7, 7], "c", 10)
    hit = store.lookup([1, 2, 3, 8])
    assert hit is not None and (hit.payload, hit.length, hit.stored) == ("a", 3, 5)
    hit = store.lookup([1, 2, 9, 9, 4])
    assert hit is not None and (hit.payload, hit.length) == ("b", 4)
    hit = store.lookup([1, 2, 3, 4, 5])  # the whole prompt is stored: its last token still runs
    assert hit is not None and (hit.payload, hit.length) == ("a", 4)
    assert store.lookup([8, 1, 2]) is None and store.lookup([7]) is None
    assert (store.hits, store.misses, store.hit_tokens) == (3, 2, 11)


def test_a_covered_key_is_not_stored_twice_and_a_longer_key_replaces_its_prefix() -> None:
    store: PrefixStore[str] = PrefixStore(10_000)
    assert store.insert([1, 2, 3], "short", 10)
    assert store.insert([1, 2, 3, 4], "long", 10)  # covers "short"
    assert len(store) == 1 and store.used == 10 + 16
    assert not store.insert([1, 2], "shorter", 10)  # "long" serves it by trimming
    assert len(store) == 1
    hit = store.lookup([1, 2, 3, 5])
    assert hit is not None and hit.payload == "long" and hit.length == 3


def test_lru_eviction_keeps_the_recently_used_within_the_cap() -> None:
    store: PrefixStore[str] = PrefixStore(3 * (100 + 8))  # three entries of 100 bytes + 2-token keys
    for name, key in (("a", [1, 1]), ("b", [2, 2]), ("c", [3, 3])):
        assert store.insert(key, name, 100)
    assert store.lookup([1, 1, 5]) is not None  # "a" is now the most recent
    assert store.insert([4, 4], "d", 100)  # evicts "b", the least recently used
    assert store.lookup([2, 2, 5]) is None
    assert {store.lookup(k + [5]).payload for k in ([1, 1], [3, 3], [4, 4])} == {"a", "c", "d"}  # type: ignore[union-attr]
    assert not store.insert([5, 5], "huge", store.capacity)  # larger than the whole cap: refused
    assert len(store) == 3 and store.used == store.capacity


def test_the_cap_is_never_exceeded_over_random_traffic() -> None:
    rng = random.Random(5)
    for trimmable in (True, False):
        store: PrefixStore[int] = PrefixStore(5_000, trimmable=trimmable)
        for step in range(2_000):
            tokens = [rng.randint(0, 3) for _ in range(rng.randint(1, 12))]
            if rng.random() < 0.5:
                store.insert(tokens, step, rng.randint(0, 1_500))
            else:
                store.lookup(tokens)
            assert store.used <= store.capacity
            assert store.used == sum(entry.nbytes for entry in store._entries.values())
            assert sorted(store._entries) == store._keys


def test_exact_mode_only_serves_prompts_that_extend_a_whole_key() -> None:
    store: PrefixStore[str] = PrefixStore(10_000, trimmable=False)
    store.insert([1], "one", 1)
    store.insert([1, 2, 5], "one-two-five", 1)
    store.insert([1, 2], "one-two", 1)  # kept: a longer key cannot be cut down to it
    hit = store.lookup([1, 2, 6, 7])
    assert hit is not None and (hit.payload, hit.length) == ("one-two", 2)
    hit = store.lookup([1, 3])
    assert hit is not None and (hit.payload, hit.length) == ("one", 1)
    hit = store.lookup([1, 2, 5])  # the stored [1, 2, 5] itself cannot serve: its last token must run
    assert hit is not None and (hit.payload, hit.length) == ("one-two", 2)
    assert store.lookup([2, 1]) is None


# --- KV sharing on the engine thread ---------------------------------------------------


@pytest.fixture(scope="module")
def engines(tiny_llama_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """The tiny llama twice: with a prefix cache, and without (the reference)."""
    cached = start_engine(tiny_llama_path, max_batch_size=8, prefill_step_size=16, prefix_cache_bytes=4 << 20)
    plain = start_engine(tiny_llama_path, max_batch_size=8, prefill_step_size=16)
    yield cached, plain
    cached.stop()
    plain.stop()


def run(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY, n: int = 1, max_tokens: int = 8):
    """(tokens of each row, cached tokens) of one job."""

    async def go() -> tuple[list[list[int]], int]:
        job, outs = make_job(engine, prompt, params, n=n, max_tokens=max_tokens)
        _, done = await run_job(engine, job)
        return [out.tokens for out in outs], done.cached_tokens

    return asyncio.run(go())


def test_entries_and_running_caches_never_write_into_each_other(engines: tuple[Engine, Engine]) -> None:
    engine, _ = engines

    def check() -> None:
        from mlx_lm.models.cache import make_prompt_cache

        model = engine.model
        prefix = PrefixCache(model, 1 << 20)
        cache = make_prompt_cache(model)
        model(mx.array(BASE)[None], cache=cache)
        assert prefix.keep(BASE, cache)
        stored = [mx.array(state[0]) for _, state in prefix.store._entries[pack(BASE)].payload.layers]
        model(mx.array([1, 2, 3])[None], cache=cache)  # the running cache goes on
        forked, length = prefix.take(BASE[:40] + [9, 9])
        assert length == 40 and all(layer.offset == 40 for layer in forked)
        model(mx.array([9, 9, 9])[None], cache=forked)  # a hit writes where the entry has data
        after = [state[0] for _, state in prefix.store._entries[pack(BASE)].payload.layers]
        assert all(mx.array_equal(a, b).item() for a, b in zip(stored, after))

    on_thread(engine, check)


def test_hits_give_the_same_tokens_as_no_cache(engines: tuple[Engine, Engine]) -> None:
    cached, plain = engines
    run(cached, BASE)  # warm
    prompts = [BASE[:50] + [9, 9, 9], BASE, BASE + [1, 2, 3], BASE[:33], BASE[:16] + [4] * 30]
    for prompt in prompts:
        for params, n in ((GREEDY, 1), (SEEDED, 1), (SEEDED, 3)):
            tokens, hit = run(cached, prompt, params, n)
            assert hit > 0
            assert tokens == run(plain, prompt, params, n)[0]


def test_the_next_turn_hits_the_prompt_and_the_reply(engines: tuple[Engine, Engine]) -> None:
    cached, _ = engines
    prompt = [400 + i % 50 for i in range(37)]
    (reply,), _ = run(cached, prompt, max_tokens=12)
    _, hit = run(cached, prompt + reply + [5, 6])
    assert hit == len(prompt) + len(reply)

    async def two_at_once() -> tuple[list[int], list[int]]:  # rows finishing out of a 2-row batch
        first, (out,) = make_job(cached, [300, *prompt], max_tokens=9)
        other, _ = make_job(cached, [301, *prompt], max_tokens=30)
        await asyncio.gather(run_job(cached, first), run_job(cached, other))
        return [300, *prompt], out.tokens

    started, reply = asyncio.run(two_at_once())
    assert run(cached, started + reply + [7])[1] == len(started) + len(reply)


def test_bench_jobs_neither_look_up_nor_insert(engines: tuple[Engine, Engine]) -> None:
    cached, _ = engines
    prompt = [200 + i % 7 for i in range(60)]
    before = cached.stats()

    async def bench() -> int:
        job, _ = make_job(cached, prompt, max_tokens=4, bench=True)
        return (await run_job(cached, job))[1].cached_tokens

    assert asyncio.run(bench()) == 0 and asyncio.run(bench()) == 0
    after = cached.stats()
    keys = ("prefix_cache_hits", "prefix_cache_misses", "prefix_cache_hit_tokens", "prefix_cache_bytes")
    assert all(after[key] == before[key] for key in keys)


def test_a_sliding_window_model_gets_exact_prefix_hits_only(tiny_llama_path: Path) -> None:
    from mlx_lm import load
    from mlx_lm.models.cache import RotatingKVCache

    def rotating(bytes_: int) -> Engine:
        engine = Engine(prefill_step_size=16, prefix_cache_bytes=bytes_)
        engine.start()

        def load_model() -> None:
            model, _ = load(str(tiny_llama_path))
            model.make_cache = lambda: [RotatingKVCache(max_size=48) for _ in model.layers]
            engine.attach(model)

        engine.call(load_model).result()
        return engine

    cached, plain = rotating(1 << 20), rotating(0)
    try:
        assert cached.prefix is not None and cached.prefix.mode == "exact"
        assert cache_mode([RotatingKVCache(max_size=48, keep=4)]) is None  # sinks: chunking shows
        first = [10 + i % 90 for i in range(70)]  # longer than the window: the cache wraps
        (reply,), hit = run(cached, first)
        assert hit == 0
        # first + [5]: only the last token runs, written in place into the shared ring buffer
        cases = ((first + reply + [3, 4], len(first)), (first + [5], len(first)), (first[:50] + [8, 8], 0))
        for prompt, expected in cases:
            for params in (GREEDY, SEEDED):
                tokens, hit = run(cached, prompt, params)
                assert hit == expected
                assert tokens == run(plain, prompt, params)[0]
    finally:
        cached.stop()
        plain.stop()


def test_hundreds_of_cancelled_requests_leak_no_rows_and_keep_the_cap(tiny_llama_path: Path) -> None:
    cap = 600_000  # a few tiny-llama entries: evictions all along
    engine = start_engine(tiny_llama_path, max_batch_size=4, prefill_step_size=16, prefix_cache_bytes=cap)
    rng = random.Random(9)

    async def storm() -> None:
        pending = []
        for index in range(300):
            prompt = BASE[: rng.randint(10, 75)] + [rng.randint(3, 500) for _ in range(rng.randint(1, 40))]
            job, _ = make_job(
                engine, prompt, SamplingParams(temperature=1.0), max_tokens=50, n=rng.randint(1, 2)
            )
            engine.submit(job)
            pending.append(job)
            if index % 3:
                await asyncio.sleep(rng.choice([0, 0.001, 0.005]))
                engine.cancel(job)
            if len(pending) > 12:
                for old in pending[:-12]:
                    engine.cancel(old)
                pending = pending[-12:]
            assert engine.stats()["prefix_cache_bytes"] <= cap
        for job in pending:
            engine.cancel(job)

    try:
        asyncio.run(storm())
        stats = on_thread(engine, engine.stats)
        assert (stats["running_rows"], stats["waiting_requests"], stats["prefilling"]) == (0, 0, 0)
        assert 0 < stats["prefix_cache_bytes"] <= cap and stats["prefix_cache_entries"] > 0
        assert stats["prefix_cache_hits"] > 0
        assert run(engine, BASE)[0] == run(engine, BASE)[0]  # still serving, and still exact
    finally:
        engine.stop()


# --- over HTTP --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tiny_llama_path: Path, scripted_model: Callable[[str], Path]) -> Any:
    tiny, plain = str(tiny_llama_path), str(scripted_model("plain"))
    models = {
        "chat": {"backend": "mlx", "path": plain, "defaults": {"temperature": 0.0}},
        "tiny": {"backend": "mlx", "path": tiny},
        "tiny-off": {"backend": "mlx", "path": tiny, "options": {"prefix_cache_bytes": 0}},
        "bench": {"backend": "mlx", "path": tiny},
        "small": {"backend": "mlx", "path": tiny, "options": {"prefix_cache_bytes": 300_000}},
    }
    return mlx_app(models)


def prompt_tokens(app: Any, model: str, messages: list[dict[str, str]], **fields: Any) -> list[int]:
    backend = app.state.registry.entries[model].backend
    request = msgspec.convert({"model": model, "messages": messages, **fields}, ChatCompletionRequest)
    return list(backend._build_prompt(request).tokens)


def shared(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def stats(client: openai.OpenAI, model: str) -> dict[str, Any]:
    return client.models.retrieve(model).model_extra["backend_stats"]


def test_the_second_turn_of_a_chat_reports_its_cached_prefix(
    client: openai.OpenAI, app: Any, scripted_model: Callable[[str], Path]
) -> None:
    extra = {"enable_thinking": False}
    turn = [{"role": "system", "content": "You answer briefly. " * 20}, {"role": "user", "content": "Hi!"}]
    first = client.chat.completions.create(model="chat", messages=turn, extra_body=extra)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    reply = first.choices[0].message.content
    turn2 = [*turn, {"role": "assistant", "content": reply}, {"role": "user", "content": "And you?"}]
    second = client.chat.completions.create(model="chat", messages=turn2, extra_body=extra)

    p1, p2 = prompt_tokens(app, "chat", turn, **extra), prompt_tokens(app, "chat", turn2, **extra)
    stored = p1 + script_info(scripted_model("plain"))["tokens"]  # prompt + reply, EOS included
    expected = min(shared(p2, stored), len(p2) - 1)
    assert expected >= len(p1) - 8  # the whole first prompt but its generation prompt, at least
    assert second.usage.prompt_tokens_details.cached_tokens == expected
    assert second.choices[0].message.content == reply
    assert stats(client, "chat")["prefix_cache_hit_tokens"] == expected


def test_output_with_a_hit_equals_output_without_the_cache(client: openai.OpenAI) -> None:
    system = {"role": "system", "content": "Shared rules: " + "be exact and kind; " * 40}
    results: dict[str, list[Any]] = {"tiny": [], "tiny-off": []}
    for model, answers in results.items():
        for index, fields in enumerate(({"temperature": 0}, {"seed": 21}, {"seed": 4, "n": 2, "top_p": 0.9})):
            messages = [system, {"role": "user", "content": f"Question {index}?"}]
            completion = client.chat.completions.create(
                model=model, messages=messages, max_tokens=12, **fields
            )
            answers.append(
                (
                    [c.message.content for c in completion.choices],
                    completion.usage.prompt_tokens_details.cached_tokens,
                )
            )
    assert [texts for texts, _ in results["tiny"]] == [texts for texts, _ in results["tiny-off"]]
    assert [hit for _, hit in results["tiny-off"]] == [0, 0, 0]
    assert all(hit > 100 for _, hit in results["tiny"][1:])  # the system prompt came from the cache


def test_the_bench_endpoint_bypasses_the_cache(client: openai.OpenAI, server: str) -> None:
    body = {"model": "bench", "messages": [{"role": "user", "content": "Bench me " * 30}], "max_tokens": 4}
    for _ in range(2):
        result = httpx.post(f"{server}/bench/chat/completions", json=body, timeout=60).json()
        assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert result["generation_stats"]["cached_tokens"] == 0
    backend_stats = stats(client, "bench")
    assert backend_stats["prefix_cache_hits"] == backend_stats["prefix_cache_misses"] == 0
    assert backend_stats["prefix_cache_entries"] == 0
    plain = client.chat.completions.create(model="bench", messages=body["messages"], max_tokens=4)
    assert plain.usage.prompt_tokens_details.cached_tokens == 0  # the bench runs stored nothing
    again = httpx.post(f"{server}/bench/chat/completions", json=body, timeout=60).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # though an entry exists now


def test_stats_show_the_cache_within_its_cap(client: openai.OpenAI) -> None:
    for index in range(10):
        messages = [{"role": "user", "content": f"Topic {index}: " + "words " * (40 + 25 * index)}]
        client.chat.completions.create(model="small", messages=messages, max_tokens=3)
        backend_stats = stats(client, "small")
        assert (
            0 < backend_stats["prefix_cache_bytes"] <= backend_stats["prefix_cache_capacity_bytes"] == 300_000
        )
    assert backend_stats["prefix_cache_entries"] < 10  # older entries were evicted
    assert backend_stats["running_rows"] == 0 and backend_stats["waiting_requests"] == 0
    assert backend_stats["prefix_cache_misses"] + backend_stats["prefix_cache_hits"] == 10
