"""The plugins of one config: built, started and stopped together.

`create_app` builds one at start-up; a config reload builds the next one from
the new config (new keys, rules, tools) and swaps it in, so plugin settings
change without a restart. A request already generating finishes with the plugins
it started with; failures are reported to the current ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import pluggy

from gateway.config import GatewayConfig
from gateway.hooks import HookRunner
from gateway.plugins import check_plugins
from gateway.registry import BackendFactory
from gateway.tools import Tool, collect_tools


def collect_backends(manager: pluggy.PluginManager) -> dict[str, BackendFactory]:
    factories: dict[str, BackendFactory] = {}

    def register(kind: str, factory: BackendFactory) -> None:
        factories[kind] = factory

    manager.hook.register_backends(register=register)
    return factories


@dataclass
class PluginSet:
    manager: pluggy.PluginManager
    hooks: HookRunner
    tools: dict[str, Tool]
    backends: dict[str, BackendFactory]

    @classmethod
    def build(cls, manager: pluggy.PluginManager) -> PluginSet:
        """Check the plugins and collect what they register; raises ConfigError."""
        check_plugins(manager)
        return cls(manager, HookRunner(manager), collect_tools(manager), collect_backends(manager))

    async def start(self, config: GatewayConfig) -> None:
        """`gateway_startup`: plugins check their settings against the tools here."""
        await self.hooks.call_all("gateway_startup", config=config, tools=self.tools)

    async def stop(self) -> None:
        """`gateway_shutdown`, for every plugin even if one fails."""
        await self.hooks.notify("gateway_shutdown")
