"""Several models from one config: budget and LRU eviction, pins, TTL, admin, hot reload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway import create_app, load_config, parse_config
from gateway.admission import Admission
from gateway.cli import main
from gateway.errors import BackendUnavailable, RateLimited
from tests.conftest import plugin_manager
from tests.support.server import running_server

GIB = 2**30
USER = [{"role": "user", "content": "hello models"}]


def config(models: dict[str, dict[str, Any]], **server: Any) -> dict[str, Any]:
    return {"server": server, "models": models}


def echo_model(size_gib: float, **extra: Any) -> dict[str, Any]:
    return {"backend": "echo", "memory_bytes": int(size_gib * GIB), **extra}


def statuses(base_url: str) -> dict[str, str]:
    return {card["id"]: card["status"] for card in httpx.get(f"{base_url}/v1/models").json()["data"]}


def chat(base_url: str, model: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions", json={"model": model, "messages": USER, **body}, timeout=30
    )


def test_lru_eviction_under_a_budget_that_fits_two_and_pins() -> None:
    models = {"a": echo_model(1), "b": echo_model(1, pin=True), "c": echo_model(1), "huge": echo_model(5)}
    app = create_app(parse_config(config(models, memory_budget="2.5GiB")), plugin_manager())
    with running_server(app) as base_url:
        assert statuses(base_url) == dict.fromkeys(models, "unloaded")  # lazy: nothing loaded yet
        assert chat(base_url, "a").status_code == 200
        assert chat(base_url, "b").status_code == 200
        assert chat(base_url, "c").status_code == 200  # evicts a (least recently used, b is pinned)
        assert statuses(base_url) == {"a": "unloaded", "b": "loaded", "c": "loaded", "huge": "unloaded"}
        assert chat(base_url, "a").status_code == 200  # evicts c, never the pinned b
        assert statuses(base_url)["c"] == "unloaded" and statuses(base_url)["b"] == "loaded"
        too_big = chat(base_url, "huge")
        assert too_big.status_code == 503
        assert too_big.json()["error"]["code"] == "model_too_large"
        card = httpx.get(f"{base_url}/v1/models/b").json()
        assert (card["pinned"], card["memory_bytes"]) == (True, GIB)


def test_ttl_unloads_idle_models_but_not_pinned() -> None:
    models = {
        "short": echo_model(0, ttl_s=0.5),
        "pinned": echo_model(0, ttl_s=0.5, pin=True),
        "forever": echo_model(0),
    }
    app = create_app(parse_config(config(models)), plugin_manager())
    with running_server(app) as base_url:
        for model in models:
            assert chat(base_url, model).status_code == 200
        for _ in range(60):  # the idle sweep runs once a second
            if statuses(base_url)["short"] == "unloaded":
                break
            time.sleep(0.1)
        assert statuses(base_url) == {"short": "unloaded", "pinned": "loaded", "forever": "loaded"}


def test_admin_load_and_unload() -> None:
    app = create_app(parse_config(config({"m": echo_model(0, aliases=["alias-m"])})), plugin_manager())
    with running_server(app) as base_url:
        loaded = httpx.post(f"{base_url}/admin/load/alias-m").json()
        assert (loaded["id"], loaded["status"]) == ("m", "loaded")
        assert httpx.post(f"{base_url}/admin/unload/m").json()["status"] == "unloaded"
        missing = httpx.post(f"{base_url}/admin/load/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_admin_key_is_required_when_configured() -> None:
    app = create_app(parse_config(config({"m": echo_model(0)}, admin_key="s3cret")), plugin_manager())
    with running_server(app) as base_url:
        refused = httpx.post(f"{base_url}/admin/load/m")
        assert refused.status_code == 401
        assert "s3cret" not in refused.text
        allowed = httpx.post(f"{base_url}/admin/load/m", headers={"authorization": "Bearer s3cret"})
        assert allowed.status_code == 200


def test_hot_reload_adds_and_removes_models_while_a_stream_is_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[models.old]\nbackend = "echo"\noptions = { delay_ms = 30 }\n\n[models.kept]\nbackend = "echo"\n'
    )
    app = create_app(load_config(path), plugin_manager(), config_path=path)
    with running_server(app) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
        words = " ".join(f"w{i}" for i in range(30))
        stream = client.chat.completions.create(
            model="old", messages=[{"role": "user", "content": words}], stream=True
        )
        received = [next(iter(stream)).choices[0].delta.content]
        path.write_text(
            '[models.kept]\nbackend = "echo"\n\n[models.new]\nbackend = "echo"\naliases = ["fresh"]\n'
        )
        reloaded = httpx.post(f"{base_url}/admin/reload")
        assert reloaded.json() == {"models": ["kept", "new"]}
        received += [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
        assert "".join(text or "" for text in received) == words  # the in-flight stream finished
        assert chat(base_url, "fresh").status_code == 200
        assert chat(base_url, "old").status_code == 404
        assert set(statuses(base_url)) == {"kept", "new"}

        path.write_text('[models.kept]\nbackend = "warp-drive"\n')
        rejected = httpx.post(f"{base_url}/admin/reload")
        assert rejected.status_code == 400 and "warp-drive" in rejected.json()["error"]["message"]
        path.write_text('[models.kept]\nbackend = "echo"\noptions = { warp = 9 }\n')
        rejected = httpx.post(f"{base_url}/admin/reload")
        assert rejected.status_code == 400 and 'models."kept".options' in rejected.json()["error"]["message"]
        assert chat(base_url, "new").status_code == 200  # the old config stays


PLUGIN_CONFIG = """
[plugins]
disabled = ["mlx", "openai"]

[[plugins.settings.auth.keys]]
id = "ops"
key = "{key}"

[[plugins.settings.rewrite.rules]]
system_prompt = "{prompt}"
system_mode = "replace"

[[plugins.settings.tools.rules]]
tools = ["{tool}"]

[models.system]
backend = "echo"
options = {{ echo_system = true }}
"""


def test_reload_applies_new_plugin_settings(tmp_path: Path) -> None:
    """Keys can be rotated and rules changed without a restart; a bad plugin config changes nothing."""
    path = tmp_path / "config.toml"
    path.write_text(PLUGIN_CONFIG.format(key="sk-old-0123456789", prompt="old rules", tool="calculator"))
    with running_server(create_app(load_config(path), config_path=path)) as base_url:

        def ask(key: str) -> str | None:
            client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
            return client.chat.completions.create(model="system", messages=USER).choices[0].message.content

        assert ask("sk-old-0123456789") == "old rules"
        path.write_text(PLUGIN_CONFIG.format(key="sk-new-0123456789", prompt="new rules", tool="calculator"))
        assert httpx.post(f"{base_url}/admin/reload").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            ask("sk-old-0123456789")
        assert ask("sk-new-0123456789") == "new rules"

        path.write_text(PLUGIN_CONFIG.format(key="sk-bad-0123456789", prompt="bad rules", tool="teleport"))
        rejected = httpx.post(f"{base_url}/admin/reload")
        assert rejected.status_code == 400 and "teleport" in rejected.json()["error"]["message"]
        assert ask("sk-new-0123456789") == "new rules"


def test_a_stream_keeps_its_plugins_through_a_reload(tmp_path: Path) -> None:
    """A reload that drops a redaction rule must not unredact the rest of a running stream."""
    path = tmp_path / "config.toml"
    models = '[models.slow]\nbackend = "echo"\noptions = { delay_ms = 30 }\n'
    path.write_text(
        '[plugins]\ndisabled = ["mlx", "openai"]\n[plugins.settings.redact]\nwords = ["secret"]\n' + models
    )
    with running_server(create_app(load_config(path), config_path=path)) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
        words = " ".join(["secret"] * 12)
        stream = client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": words}], stream=True
        )
        chunks = iter(stream)
        received = [next(chunks).choices[0].delta.content or ""]
        path.write_text('[plugins]\ndisabled = ["mlx", "openai"]\n' + models)
        assert httpx.post(f"{base_url}/admin/reload").status_code == 200
        received += [chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices]
        assert "".join(received) == " ".join(["[redacted]"] * 12)
        after = client.chat.completions.create(model="slow", messages=[{"role": "user", "content": "secret"}])
        assert after.choices[0].message.content == "secret"  # new requests get the new plugins


def test_reload_via_cli(tmp_path: Path) -> None:
    """The CLI's `gateway reload` reaches a running server."""
    path = tmp_path / "config.toml"
    path.write_text('[models.one]\nbackend = "echo"\n')
    app = create_app(load_config(path), plugin_manager(), config_path=path)
    with running_server(app) as base_url:
        path.write_text('[models.one]\nbackend = "echo"\n\n[models.two]\nbackend = "echo"\n')
        main(["reload", "--url", base_url])
        assert set(statuses(base_url)) == {"one", "two"}


def test_admission_queue_is_fifo_and_bounded() -> None:
    async def scenario() -> tuple[list[int], float]:
        admission = Admission(max_running=1, max_queued=2, queue_timeout_s=5)
        order: list[int] = []
        first = await admission.acquire()

        async def waiter(number: int) -> None:
            slot = await admission.acquire()
            order.append(number)
            slot.release()

        tasks = [asyncio.create_task(waiter(number)) for number in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(RateLimited) as caught:
            await admission.acquire()
        first.release()
        await asyncio.gather(*tasks)
        return order, float(caught.value.headers["Retry-After"])

    order, retry_after = asyncio.run(scenario())
    assert order == [1, 2]
    assert retry_after >= 1


def test_admission_queue_timeout() -> None:
    async def scenario() -> None:
        admission = Admission(max_running=1, max_queued=4, queue_timeout_s=0.05)
        held = await admission.acquire()
        with pytest.raises(BackendUnavailable) as caught:
            await admission.acquire()
        assert caught.value.code == "queue_timeout"
        held.release()
        (await admission.acquire()).release()  # the timed-out waiter left no trace
        assert (admission.running, admission.queued) == (0, 0)

    asyncio.run(scenario())


def test_queue_overflow_is_429_with_retry_after() -> None:
    models = {"tiny": {"backend": "echo", "max_concurrency": 1, "max_queue": 0, "options": {"delay_ms": 50}}}
    app = create_app(parse_config(config(models)), plugin_manager())
    with running_server(app) as base_url:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                body = {"model": "tiny", "messages": [{"role": "user", "content": "a b c d e f"}]}
                return await asyncio.gather(
                    *(client.post("/v1/chat/completions", json=body) for _ in range(4))
                )

        responses = asyncio.run(burst())
        codes = sorted(response.status_code for response in responses)
        assert codes[0] == 200 and 429 in codes
        limited = next(response for response in responses if response.status_code == 429)
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) >= 1
