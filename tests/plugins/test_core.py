"""The plugin mechanism: discovery, order, disabling, validation, sync and async hooks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway import ConfigError, Identity, RequestContext, ToolCall, create_app, hookimpl
from gateway.hooks import HookRunner
from gateway.plugins import BUILTIN_PLUGINS, default_plugin_manager
from gateway.protocol import FunctionCall
from tests.conftest import echo_config, plugin_manager
from tests.plugins.helpers import ask, captured_logs, gateway_config, serve
from tests.plugins.modules import probe

MODULES = "tests.plugins.modules."
ALL_SETTINGS = {
    "auth": {"keys": [{"id": "k", "key": "secret-key", "tokens_per_minute": 1000}]},
    "rewrite": {"rules": [{"system_prompt": "hello"}]},
    "tools": {"rules": [{"tools": ["calculator"]}]},
    "redact": {"words": ["x"]},
    "request_log": {"log_prompts": True},
}


def hook_order(manager: Any, hook: str) -> list[str]:
    return [impl[0] for impl in HookRunner(manager).implementations(hook)]


@pytest.mark.parametrize("module", ["misspelled", "bad_argument", "async_chunk", "broken_factory"])
def test_a_broken_plugin_module_is_a_config_error_at_create_app(module: str) -> None:
    with pytest.raises(ConfigError, match="plugins: ") as raised:
        create_app(gateway_config(modules=[MODULES + module]))
    assert {
        "misspelled": "rewrite_reqest",
        "bad_argument": "body",
        "async_chunk": "'on_chunk' with 'async def'",
        "broken_factory": "plugin 'tests.plugins.modules.broken_factory' failed to start: KeyError",
    }[module] in str(raised.value)


def test_a_misspelled_hookimpl_on_an_object_fails_create_app_too() -> None:
    class Misspelled:
        @hookimpl
        def on_respons(self, response: Any) -> None:  # sic
            return None

    with pytest.raises(ConfigError, match="on_respons") as raised:
        create_app(echo_config(), plugin_manager(Misspelled()))
    message = str(raised.value)
    assert "plugin 'tests.plugins.test_core.Misspelled' implements 'on_respons'" in message
    assert "did you mean 'on_response'?" in message and " at 0x" not in message


def test_a_misspelled_hook_in_a_module_names_the_module_and_the_hook_meant() -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(gateway_config(modules=[MODULES + "misspelled"]))
    assert str(raised.value) == (
        f"plugins: plugin '{MODULES}misspelled' implements 'rewrite_reqest', which is no hook; "
        "did you mean 'rewrite_request'?"
    )


def test_unknown_plugin_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import plugin module 'no.such.module'"):
        create_app(gateway_config(modules=["no.such.module"]))


@pytest.mark.hooks("rewrite_request")
def test_config_modules_run_first_then_builtins_in_documented_order() -> None:
    config = gateway_config(ALL_SETTINGS, modules=[MODULES + "probe"])
    manager = default_plugin_manager(config)
    # Per-request hooks run from the last registered plugin to the first.
    assert hook_order(manager, "rewrite_request") == [MODULES + "probe", "rewrite", "tools"]
    assert hook_order(manager, "on_response") == ["auth", "request_log"]
    assert hook_order(manager, "on_request") == ["redact", "request_log"]
    registered = [name for name in BUILTIN_PLUGINS if manager.has_plugin(name)]
    assert registered == ["echo", "request_log", "redact", "calculator", "tools", "rewrite", "auth"]
    probe.seen.clear()
    with serve(gateway_config(ALL_SETTINGS | {"auth": {}}, modules=[MODULES + "probe"])) as base_url:
        ask(base_url, "non-stream")
    assert probe.seen == [["user"]]  # before the built-in rewrite added its system prompt


def test_tryfirst_and_trylast_override_registration_order() -> None:
    class Plugin:
        def __init__(self, name: str) -> None:
            self.name = name

    def make(name: str, **marker: bool) -> object:
        @hookimpl(**marker)
        def on_request() -> None:
            return None

        plugin = Plugin(name)
        plugin.on_request = on_request  # type: ignore[attr-defined]
        return plugin

    manager = plugin_manager()
    for plugin, name in [(make("a", tryfirst=True), "a"), (make("b"), "b"), (make("c", trylast=True), "c")]:
        manager.register(plugin, name=name)
    manager.register(make("d"), name="d")
    assert hook_order(manager, "on_request") == ["a", "d", "b", "c"]


@pytest.mark.parametrize("how", ["config", "env"])
def test_disabled_plugins_are_never_registered(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["request_log", MODULES + "misspelled"]
    if how == "env":
        monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", ",".join(names))
        config = gateway_config(modules=[MODULES + "misspelled"])
    else:
        config = gateway_config(modules=[MODULES + "misspelled"], disabled=names)
    app = create_app(config)  # the misspelled module is not even imported
    assert not app.state.plugins.manager.has_plugin("request_log")
    assert app.state.plugins.manager.has_plugin("auth")


def test_a_factory_returning_none_registers_nothing() -> None:
    manager = default_plugin_manager(gateway_config())
    assert [manager.has_plugin(name) for name in ("rewrite", "tools", "redact")] == [False] * 3
    manager = default_plugin_manager(gateway_config(ALL_SETTINGS))
    assert [manager.has_plugin(name) for name in ("rewrite", "tools", "redact")] == [True] * 3


class SyncNone:
    @hookimpl
    def authenticate(self) -> None:
        calls.append("sync-none")

    @hookimpl
    def route_tool_call(self) -> None:
        calls.append("sync-none")


class AsyncNone:
    @hookimpl
    async def authenticate(self) -> None:
        calls.append("async-none")

    @hookimpl
    async def route_tool_call(self) -> None:
        calls.append("async-none")


class AsyncAnswer:
    @hookimpl
    async def authenticate(self) -> Identity:
        calls.append("async-answer")
        await asyncio.sleep(0)
        return Identity("async")

    @hookimpl
    async def route_tool_call(self) -> str:
        calls.append("async-answer")
        return "from async"


class SyncAnswer:
    @hookimpl
    def authenticate(self) -> Identity:
        calls.append("sync-answer")
        return Identity("sync")

    @hookimpl
    def route_tool_call(self) -> str:
        calls.append("sync-answer")
        return "from sync"


calls: list[str] = []


@pytest.mark.hooks("authenticate", "route_tool_call")
@pytest.mark.parametrize(
    ("plugins", "expected", "called"),
    [
        # Registered last runs first: the first answer that is not None wins, awaited.
        (
            (SyncAnswer, AsyncAnswer, AsyncNone, SyncNone),
            "async",
            ["sync-none", "async-none", "async-answer"],
        ),
        ((AsyncAnswer, SyncAnswer, SyncNone, AsyncNone), "sync", ["async-none", "sync-none", "sync-answer"]),
        ((SyncNone, AsyncNone), None, ["async-none", "sync-none"]),
    ],
)
def test_first_result_hooks_await_async_and_sync_alike(
    plugins: tuple[type, ...], expected: str | None, called: list[str]
) -> None:
    runner = HookRunner(plugin_manager(*(plugin() for plugin in plugins)))
    context = RequestContext("req_1", "chat")
    calls.clear()
    identity = asyncio.run(runner.first_result("authenticate", headers={}, model="echo", context=context))
    assert (identity.key_id if identity else None, calls) == (expected, called)
    calls.clear()
    call = ToolCall(id="c1", function=FunctionCall("t", "{}"))
    output = asyncio.run(
        runner.first_result("route_tool_call", tool_call=call, request=None, context=context)
    )
    assert (output, calls) == (f"from {expected}" if expected else None, called)


def test_trace_hooks_logs_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hooks._TRACE", True)
    config = gateway_config({"redact": {"words": ["x"]}})
    with captured_logs() as entries, serve(config) as base_url:
        ask(base_url, "non-stream")
    traced = [(entry["hook"], entry["plugin"]) for entry in entries if entry["event"] == "hook call"]
    assert ("gateway_startup", "auth") in traced
    assert ("on_chunk", "redact") in traced
    assert traced.index(("on_request", "redact")) < traced.index(("on_response", "request_log"))
