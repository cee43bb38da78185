"""The guide's examples (docs/examples/*.py) are real plugins: load them and use them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import openai
import pytest

from gateway import ConfigError
from tests.plugins.helpers import PATHS, ask, captured_logs, client, gateway_config, production_manager, serve

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.hooks("on_chunk", "rewrite_request")
@pytest.mark.parametrize("path", PATHS)
def test_ten_line_plugin_shouts_on_every_path_and_refuses_a_topic(path: str) -> None:
    config = gateway_config()
    with serve(config, production_manager(config, load_example("gateway_shout"))) as base_url:
        assert ask(base_url, path).content == "THE QUICK BROWN FOX"
        with pytest.raises(openai.BadRequestError, match="something else"):
            client(base_url).chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "a Forbidden thing"}]
            )


@pytest.mark.hooks("register_tools", "route_tool_call")
def test_word_count_tool() -> None:
    config = gateway_config({"tools": {"rules": [{"models": ["echo"], "tools": ["word_count"]}]}})
    with serve(config, production_manager(config, load_example("word_count"))) as base_url:
        content = '{"text": "one two three"}'
        answer = ask(base_url, "stream", messages=[{"role": "user", "content": f"call word_count {content}"}])
    assert answer.content == "tool word_count said: 3"


def test_configured_plugin_reads_its_settings() -> None:
    module = load_example("message_limit")
    config = gateway_config({"message_limit": {"max_messages": 2}})
    plugin = module.make_plugin(config)
    with serve(config, production_manager(config, plugin)) as base_url:
        assert ask(base_url, "non-stream").content
        three = [{"role": "user", "content": word} for word in ("a", "b", "c")]
        with pytest.raises(openai.BadRequestError, match="at most 2 messages"):
            client(base_url).chat.completions.create(model="echo", messages=three)
    with pytest.raises(ConfigError, match=r"plugins\.settings\.message_limit\.max_messages"):
        module.make_plugin(gateway_config({"message_limit": {"max_messages": 0}}))


@pytest.mark.hooks("on_response", "gateway_shutdown")
def test_async_usage_meter() -> None:
    config = gateway_config(disabled=["auth"])
    meter = load_example("usage_meter").make_plugin(config)
    with captured_logs() as entries:
        with serve(config, production_manager(config, meter)) as base_url:
            ask(base_url, "non-stream")
            ask(base_url, "stream")
        assert meter.tokens == {"anonymous": 18}  # (4 words + 1) prompt + 4 completion, twice
    assert [entry["anonymous"] for entry in entries if entry["event"] == "token usage"] == [18]
