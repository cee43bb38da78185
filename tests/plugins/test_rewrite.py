"""plugins/rewrite.py: system prompts and parameters rewritten per model, in a defined order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway import ChatCompletionRequest, ConfigError, RequestContext, create_app, hookimpl
from tests.plugins.helpers import PATHS, ask, gateway_config, production_manager, serve

pytestmark = pytest.mark.hooks("rewrite_request")

SYSTEM = [{"role": "system", "content": "client rules"}, {"role": "user", "content": "hi"}]


class SeenRequests:
    """Records the final request of each call (after every rewrite)."""

    def __init__(self) -> None:
        self.requests: list[ChatCompletionRequest] = []

    @hookimpl
    def on_request(self, request: ChatCompletionRequest) -> None:
        self.requests.append(request)


def rewrite_server(*rules: dict[str, Any]) -> Any:
    return serve(gateway_config({"rewrite": {"rules": list(rules)}}))


@pytest.mark.parametrize("path", PATHS)
def test_prepended_system_prompt_reaches_the_backend(path: str) -> None:
    rule = {"models": ["system"], "system_prompt": "Be brief. Model {model}, day {date}, caller {key_id}."}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    # `system` echoes its system prompt: ours first, merged with the client's.
    expected = f"Be brief. Model system, day {today}, caller anonymous. client rules"
    with rewrite_server(rule) as base_url:
        answer = ask(base_url, path, model="system", messages=SYSTEM, max_tokens=len(expected.split()))
    assert answer.content == expected


def test_time_variable_is_the_utc_minute() -> None:
    rule = {"models": ["system"], "system_prompt": "It is {time} on {date}; {{braces}} stay."}
    with rewrite_server(rule) as base_url:
        before = datetime.now(UTC)
        answer = ask(base_url, "non-stream", model="system", messages=SYSTEM, max_tokens=20)
        after = datetime.now(UTC)
    said = {
        f"It is {moment:%H:%M} on {moment:%Y-%m-%d}; {{braces}} stay. client rules"
        for moment in (before, after)
    }
    assert answer.content in said


def test_replace_drops_the_clients_system_messages_and_other_models_are_untouched() -> None:
    rule = {"models": ["system"], "system_prompt": "Only ours.", "system_mode": "replace"}
    with rewrite_server(rule) as base_url:
        assert ask(base_url, "non-stream", model="system", messages=SYSTEM).content == "Only ours."
        assert ask(base_url, "non-stream", model="echo", messages=SYSTEM).content == "hi"


def test_rules_chain_in_order_and_parameters_are_defaulted_forced_and_capped() -> None:
    config = gateway_config(
        {
            "rewrite": {
                "rules": [
                    {"system_prompt": "first", "defaults": {"temperature": 0.5}, "max": {"max_tokens": 8}},
                    {"models": ["echo-alias"], "system_prompt": "second", "force": {"seed": 7}},
                    {"models": ["system"], "force": {"seed": 1}},
                ]
            }
        },
        disabled=["request_log"],
    )
    seen = SeenRequests()
    with serve(config, production_manager(config, seen)) as base_url:
        ask(base_url, "non-stream", messages=SYSTEM, max_tokens=100, temperature=1.5)
        ask(base_url, "non-stream", model="echo-alias", messages=SYSTEM)
    capped, defaulted = seen.requests
    # Rule 2 runs on rule 1's result, so its prompt comes first.
    assert [m.content for m in capped.messages] == ["second\n\nfirst\n\nclient rules", "hi"]
    assert (capped.max_tokens, capped.temperature, capped.seed) == (8, 1.5, 7)
    # Unset fields get the defaults, and the ceiling applies when the client set no limit.
    assert (defaulted.max_tokens, defaulted.temperature, defaulted.seed) == (8, 0.5, 7)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"system_prompt": "Hi {name}"}, "rules[0].system_prompt: unknown variable {name}"),
        ({"system_prompt": "Hi {"}, "rules[0].system_prompt: "),
        ({"force": {"temperature": 9}}, "rules[0].force.temperature: Expected `float` <= 2.0"),
        ({"defaults": {"model": "x"}}, "rules[0].defaults: 'model' cannot be set here"),
        ({"max": {"seed": 3}}, "rules[0].max: 'seed' cannot be set here"),
        ({"system_mode": "append"}, "rules[0].system_mode"),
    ],
)
def test_bad_rules_name_the_key(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(gateway_config({"rewrite": {"rules": [rule]}}))
    assert f"plugins.settings.rewrite.{message}".replace("`", "") in str(raised.value)


@pytest.mark.hooks("on_request")
def test_user_plugins_rewrite_before_the_builtin_one() -> None:
    class Probe:
        @hookimpl
        def rewrite_request(self, request: ChatCompletionRequest, context: RequestContext) -> None:
            context.state["probe"] = [m.role for m in request.messages]

        @hookimpl
        def on_request(self, context: RequestContext) -> None:
            seen.append(context.state["probe"])

    seen: list[list[str]] = []
    config = gateway_config({"rewrite": {"rules": [{"system_prompt": "ours"}]}})
    with serve(config, production_manager(config, Probe())) as base_url:
        ask(base_url, "non-stream")
    assert seen == [["user"]]  # the built-in rewrite ran after the user plugin
