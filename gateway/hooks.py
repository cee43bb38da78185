"""Calling per-request hooks whose implementations may be sync or async.

pluggy has no async support: an `async def` implementation returns a coroutine,
which is never None, so `firstresult` would stop at it unawaited. These helpers
call each implementation in pluggy's order, await the results of `async def`
implementations, and decide after awaiting. A failure is reported with the
plugin's name.
"""

from __future__ import annotations

import inspect
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import pluggy
import structlog

from gateway.config import ConfigError
from gateway.errors import GatewayError, PluginFailed

log = structlog.get_logger("gateway.hooks")
_TRACE = os.environ.get("GATEWAY_TRACE_HOOKS", "") not in ("", "0")


class _Impl(NamedTuple):
    plugin_name: str
    function: Callable[..., Any]
    arguments: Callable[[dict[str, Any]], tuple[Any, ...]]  # its positional arguments from the call's
    is_async: bool


class HookRunner:
    """Runs the per-request hooks of one plugin manager.

    The call order of each hook is read from pluggy once (plugins are fixed once
    the app is built), so a request pays for a plain loop over functions.
    """

    def __init__(self, plugin_manager: pluggy.PluginManager) -> None:
        self.plugin_manager = plugin_manager
        self._order: dict[str, list[_Impl]] = {}

    def implementations(self, hook_name: str) -> list[_Impl]:
        order = self._order.get(hook_name)
        if order is None:
            caller = getattr(self.plugin_manager.hook, hook_name)
            order = [
                _Impl(impl.plugin_name, impl.function, _picker(impl.argnames), _is_async(impl.function))
                for impl in reversed(caller.get_hookimpls())
            ]
            self._order[hook_name] = order
        return order

    def has(self, hook_name: str) -> bool:
        return bool(self.implementations(hook_name))

    def _start(self, hook_name: str, impl: _Impl, kwargs: dict[str, Any]) -> Any:
        """Call one implementation: its result, or for an `async def` its coroutine."""
        if _TRACE:
            log.info("hook call", hook=hook_name, plugin=impl.plugin_name)
        try:
            return impl.function(*impl.arguments(kwargs))
        except (GatewayError, ConfigError):  # already says what is wrong, and where
            raise
        except Exception as error:
            raise PluginFailed(impl.plugin_name, hook_name) from error

    async def _settle(self, hook_name: str, impl: _Impl, coroutine: Any) -> Any:
        try:
            return await coroutine
        except (GatewayError, ConfigError):  # already says what is wrong, and where
            raise
        except Exception as error:
            raise PluginFailed(impl.plugin_name, hook_name) from error

    async def _call(self, hook_name: str, impl: _Impl, kwargs: dict[str, Any]) -> Any:
        result = self._start(hook_name, impl, kwargs)
        return await self._settle(hook_name, impl, result) if impl.is_async else result

    async def call_all(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Every implementation, in order; the non-None results."""
        results = []
        for impl in self.implementations(hook_name):
            result = self._start(hook_name, impl, kwargs)  # sync ones cost no coroutine
            if impl.is_async:
                result = await self._settle(hook_name, impl, result)
            if result is not None:
                results.append(result)
        return results

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Every implementation, even after one fails: a failure is logged, not raised.

        For hooks that observe a failure already on its way to the client, so a
        broken observer cannot replace the real error (or silence the others).
        """
        for impl in self.implementations(hook_name):
            try:
                await self._call(hook_name, impl, kwargs)
            except Exception as error:
                log.error("hook failed", hook=hook_name, plugin=impl.plugin_name, exc_info=error)

    async def first_result(self, hook_name: str, **kwargs: Any) -> Any:
        """Implementations in order until one returns something other than None."""
        for impl in self.implementations(hook_name):
            result = self._start(hook_name, impl, kwargs)
            if impl.is_async:
                result = await self._settle(hook_name, impl, result)
            if result is not None:
                return result
        return None

    async def chain(self, hook_name: str, value_name: str, value: Any, **kwargs: Any) -> Any:
        """Each implementation gets the previous one's result as `value_name`."""
        for impl in self.implementations(hook_name):
            result = self._start(hook_name, impl, {value_name: value, **kwargs})
            if impl.is_async:
                result = await self._settle(hook_name, impl, result)
            if result is not None:
                value = result
        return value

    def chain_sync(self, hook_name: str, value_name: str, value: Any, **kwargs: Any) -> Any:
        """`chain` for sync-only hooks on the hot path (no awaiting, no coroutine)."""
        for impl in self.implementations(hook_name):
            result = self._start(hook_name, impl, {value_name: value, **kwargs})
            if result is not None:
                value = result
        return value


def _picker(argnames: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """The implementation's arguments, in its order, from the call's keywords (in one C call)."""
    if len(argnames) > 1:
        return operator.itemgetter(*argnames)
    return lambda kwargs: tuple(kwargs[name] for name in argnames)


def _is_async(function: Callable[..., Any]) -> bool:
    """Decided once per implementation: `async def` results are awaited, plain results are not."""
    return inspect.iscoroutinefunction(function)
