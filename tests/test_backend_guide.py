"""docs/backends.md: its example backend is real, served and called through the openai client."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import openai
import pytest

from gateway import create_app, parse_config
from tests.conftest import plugin_manager
from tests.support.server import running_server

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "backends.md"
EXAMPLES = ROOT / "docs" / "examples" / "backends"
USER = [{"role": "user", "content": "one two three four"}]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_backend_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = parse_config(
        {"models": {"backwards": {"backend": "reverse", "options": {"words_per_second": 500}}}}
    )
    with running_server(create_app(config, plugin_manager(load_example("reverse")))) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def test_the_guide_shows_the_real_files() -> None:
    blocks = re.findall(
        r"<!-- (docs/examples/backends/[\w./]+) -->\n```\w*\n(.*?)```", GUIDE.read_text(), re.DOTALL
    )
    assert {path for path, _ in blocks} == {f"docs/examples/backends/{p.name}" for p in EXAMPLES.glob("*.py")}
    for path, block in blocks:
        assert block == (ROOT / path).read_text(), f"docs/backends.md shows an outdated {path}"


def test_answers_streamed_and_not(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="backwards", messages=USER)
    assert completion.choices[0].message.content == "four three two one"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    stream = client.chat.completions.create(model="backwards", messages=USER, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "four three two one"


def test_max_tokens_and_n(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="backwards", messages=USER, max_tokens=2, n=2)
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "four three", "length"),
        (1, "four three", "length"),
    ]


def test_undeclared_field_and_refused_value_are_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="backwards", messages=USER, temperature=0.5)
    assert (caught.value.param, caught.value.code) == ("temperature", "unsupported_parameter")  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="nothing to reverse"):
        client.chat.completions.create(model="backwards", messages=[{"role": "user", "content": ""}])


def test_stats_show_in_the_model_list(base_url: str, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="backwards", messages=USER)
    card = httpx.get(f"{base_url}/v1/models/backwards").json()
    assert (card["status"], card["backend_stats"]) == ("loaded", {"loaded": True})
