"""gateway/validation.py: `normalize` again after a rewrite checks what the rewrite changed."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import ChatCompletionRequest, InvalidRequest, Message, replace
from gateway.protocol import StreamOptions
from gateway.validation import normalize

BASE = normalize(
    ChatCompletionRequest(model="m", messages=[Message(role="user", content="hi")], max_tokens=8)
)


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"stream_options": StreamOptions(include_usage=True)}, "stream_options"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stop": [""]}, "stop"),
        ({"max_completion_tokens": 9}, "max_completion_tokens"),
        ({"messages": [*BASE.messages, Message(role="tool", content="42")]}, "messages[1].tool_call_id"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_a_rewrite_that_breaks_a_rule_is_refused_as_a_client_would_be(
    changes: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        normalize(replace(BASE, **changes), before=BASE)
    assert refused.value.param == param


def test_legacy_names_a_rewrite_sets_are_folded_too() -> None:
    rewritten = normalize(replace(BASE, max_tokens=None, max_completion_tokens=5), before=BASE)
    assert (rewritten.max_tokens, rewritten.max_completion_tokens) == (5, None)


def test_a_rewrite_of_sampling_fields_needs_no_second_pass() -> None:
    rewritten = replace(BASE, temperature=0.5, max_tokens=4)
    assert normalize(rewritten, before=BASE) is rewritten
