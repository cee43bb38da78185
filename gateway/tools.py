"""Server-side tools: what plugins offer through the `register_tools` hook.

The core only collects them (once, at app creation) and hands the table to
`gateway_startup`; which model gets which tool, and running them, is the
built-in `tools` plugin's job (`plugins/tools.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from gateway.config import ConfigError

EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    """One server-side tool: `function(**arguments)` may be `def` or `async def`."""

    name: str
    function: Callable[..., Any]
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def definition(self) -> dict[str, Any]:
        """The OpenAI `tools` entry that tells a model how to call it."""
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


def collect_tools(manager: pluggy.PluginManager) -> dict[str, Tool]:
    """Call every `register_tools` implementation; a name registered twice is a ConfigError."""
    tools: dict[str, Tool] = {}

    def register(
        name: str,
        function: Callable[..., Any],
        description: str = "",
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if name in tools:
            raise ConfigError(f"plugins: the tool '{name}' is registered twice")
        tools[name] = Tool(name, function, description, parameters or dict(EMPTY_PARAMETERS))

    manager.hook.register_tools(register=register)
    return tools
