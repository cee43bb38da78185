"""plugins/redact.py: the `on_chunk` hook, applied identically to every path."""

from __future__ import annotations

import pytest

from gateway import (
    ChatCompletionRequest,
    ConfigError,
    GenerationChunk,
    InvalidRequest,
    RequestContext,
    create_app,
)
from plugins.redact import Redactor, make_plugin
from tests.plugins.helpers import PATHS, ask, gateway_config, serve

pytestmark = pytest.mark.hooks("on_chunk")

SETTINGS = {"redact": {"words": ["Hunter2"], "patterns": [r"\b\d{3}-\d{4}\b"], "replacement": "***"}}
SECRET = [{"role": "user", "content": "my password is hunter2 and my number is 555-1234 ok"}]
REDACTED = "my password is *** and my number is *** ok"


@pytest.mark.parametrize("path", PATHS)
def test_redacted_identically_on_every_path(path: str) -> None:
    with serve(gateway_config(SETTINGS)) as base_url:
        answer = ask(base_url, path, messages=SECRET, max_tokens=len(SECRET[0]["content"].split()))
    assert answer.content == REDACTED


def redact_pieces(pieces: list[str], settings: dict = SETTINGS) -> tuple[str, list[str]]:
    """Feed `pieces` as one choice's chunks; the text released, and what each chunk carried."""
    plugin = make_plugin(gateway_config(settings))
    assert isinstance(plugin, Redactor)
    context = RequestContext("req_1", "chat")
    carried = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        chunk = GenerationChunk(text=piece, finish_reason="stop" if last else None)
        carried.append((plugin.on_chunk(chunk, context) or chunk).text)
    return "".join(carried), carried


def test_words_split_across_chunks_are_still_redacted() -> None:
    text, carried = redact_pieces(["my pass", "word is hun", "ter", "2, and 555", "-12", "34"])
    assert text == "my password is ***, and ***"
    assert carried == ["my ", "password is ", "", "***, and ", "", "***"]


def test_holdback_is_bounded() -> None:
    settings = {"redact": {"words": ["x"], "max_holdback": 8}}
    _, carried = redact_pieces(["abcdefgh", "ijklmnop", "q"], settings)
    assert carried == ["", "abcdefghijklmnop", "q"]


def test_reasoning_is_redacted_too() -> None:
    plugin = make_plugin(gateway_config(SETTINGS))
    assert plugin is not None
    chunk = GenerationChunk(reasoning="the password is hunter2", finish_reason="stop")
    result = plugin.on_chunk(chunk, RequestContext("req_1", "chat"))
    assert result is not None and result.reasoning == "the password is ***"


@pytest.mark.hooks("on_request")
def test_logprobs_are_refused_while_redacting() -> None:
    plugin = make_plugin(gateway_config(SETTINGS))
    assert plugin is not None
    request = ChatCompletionRequest(model="echo", messages=[], logprobs=True)
    with pytest.raises(InvalidRequest, match="logprobs"):
        plugin.on_request(request)


def test_bad_pattern_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.settings\.redact\.patterns\[1\]: invalid pattern"):
        create_app(gateway_config({"redact": {"patterns": ["ok", "(unclosed"]}}))
