"""Building the plugin manager: built-in plugins, entry points, config modules.

There is no global plugin manager. `create_app` builds one with
`default_plugin_manager(config)`; tests build their own with
`new_plugin_manager()` and register exactly the plugins they need.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from types import ModuleType

import pluggy

from gateway import hookspecs
from gateway.config import ConfigError, PluginsConfig

ENTRY_POINT_GROUP = "gateway"

# Built-in behaviour is itself a set of plugins, registered first (so they run last).
BUILTIN_PLUGINS: dict[str, str] = {
    "echo": "backends.echo",
    "mlx": "backends.mlx.plugin",
}


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the gateway's hooks and holds no plugin."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def disabled_names(config: PluginsConfig) -> set[str]:
    from_env = os.environ.get("GATEWAY_DISABLE_PLUGINS", "")
    return set(config.disabled) | {name.strip() for name in from_env.split(",") if name.strip()}


def register_modules(
    manager: pluggy.PluginManager, modules: Iterable[tuple[str, str]], disabled: set[str]
) -> None:
    """Import and register `(name, module path)` pairs, skipping disabled names."""
    for name, module_path in modules:
        if name in disabled or manager.has_plugin(name):
            continue
        try:
            module: ModuleType = importlib.import_module(module_path)
        except ImportError as error:
            raise ConfigError(f"plugins: cannot import plugin module '{module_path}': {error}") from None
        manager.register(module, name=name)


def default_plugin_manager(config: PluginsConfig) -> pluggy.PluginManager:
    """Built-ins, then entry-point plugins, then `plugins.modules` from config."""
    manager = new_plugin_manager()
    disabled = disabled_names(config)
    for name in disabled:
        manager.set_blocked(name)
    register_modules(manager, BUILTIN_PLUGINS.items(), disabled)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    register_modules(manager, ((path, path) for path in config.modules), disabled)
    check_plugins(manager)
    return manager


def check_plugins(manager: pluggy.PluginManager) -> None:
    """A misspelled hook implementation is an error at start-up, not silence."""
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise ConfigError(f"plugins: {error}") from None
