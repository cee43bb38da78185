"""Building the plugin manager: built-in plugins, entry points, config modules.

There is no global plugin manager. `create_app` builds one with
`default_plugin_manager(config)`; tests build their own with
`new_plugin_manager()` and register exactly the plugins they need.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Iterable

import pluggy

from gateway import hookspecs
from gateway.config import ConfigError, GatewayConfig, PluginsConfig

ENTRY_POINT_GROUP = "gateway"

# Built-in behaviour is itself a set of plugins, registered first (so they run after
# every user plugin). Listed in registration order: per-request hooks run bottom-up,
# so `auth` runs first and `request_log` sees the outcome of all the others.
BUILTIN_PLUGINS: dict[str, str] = {
    "echo": "backends.echo",
    "mlx": "backends.mlx.plugin",
    "openai": "backends.upstream.plugin",
    "request_log": "plugins.request_log",
    "redact": "plugins.redact",
    "calculator": "plugins.calculator",
    "tools": "plugins.tools",
    "rewrite": "plugins.rewrite",
    "auth": "plugins.auth",
}

# Hooks on the hot path or at app creation: an `async def` implementation is a mistake.
SYNC_ONLY_HOOKS = ("register_backends", "register_tools", "on_chunk")


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows the gateway's hooks and holds no plugin."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def disabled_names(config: PluginsConfig) -> set[str]:
    from_env = os.environ.get("GATEWAY_DISABLE_PLUGINS", "")
    return set(config.disabled) | {name.strip() for name in from_env.split(",") if name.strip()}


def instantiate(name: str, target: object, config: GatewayConfig) -> object | None:
    """The plugin object to register for `target` (a module or any object).

    A target with `make_plugin(config)` is a factory: its result is registered
    instead (None: nothing to register, e.g. a plugin with nothing configured).
    That is how a plugin gets per-app state and its `[plugins.settings.<name>]`.
    """
    factory = getattr(target, "make_plugin", None)
    if factory is None:
        return target
    try:
        return factory(config)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            f"plugins: plugin '{name}' failed to start: {type(error).__name__}: {error}"
        ) from error


def register_plugin(manager: pluggy.PluginManager, name: str, target: object, config: GatewayConfig) -> None:
    plugin = instantiate(name, target, config)
    if plugin is None:
        return
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        raise ConfigError(f"plugins: {error}") from None


IMPORT_HINT = (
    "plugin modules are imported from the Python path: `gateway serve` and `gateway check-config` "
    "add the config file's directory to it; for a module elsewhere, set PYTHONPATH"
)


def register_modules(
    manager: pluggy.PluginManager, modules: Iterable[tuple[str, str]], config: GatewayConfig, hint: str = ""
) -> None:
    """Import and register `(name, module path)` pairs, skipping disabled names."""
    for name, module_path in modules:
        if manager.is_blocked(name) or manager.has_plugin(name):
            continue
        try:
            module = importlib.import_module(module_path)
        except ImportError as error:
            missing = str(error.name)
            itself = module_path == missing or module_path.startswith(f"{missing}.")
            detail = f" ({hint})" if hint and itself else ""
            raise ConfigError(
                f"plugins: cannot import plugin module '{module_path}': {error}{detail}"
            ) from None
        register_plugin(manager, name, module, config)


def register_entry_points(manager: pluggy.PluginManager, config: GatewayConfig) -> None:
    """Plugins installed as packages: `[project.entry-points.gateway] name = "module"`."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if manager.is_blocked(entry_point.name) or manager.has_plugin(entry_point.name):
            continue
        try:
            target = entry_point.load()
        except Exception as error:
            raise ConfigError(
                f"plugins: cannot load entry point '{entry_point.name}' ({entry_point.value}): {error}"
            ) from error
        register_plugin(manager, entry_point.name, target, config)


def default_plugin_manager(config: GatewayConfig) -> pluggy.PluginManager:
    """Built-ins, then entry-point plugins, then `plugins.modules` from config."""
    manager = new_plugin_manager()
    for name in disabled_names(config.plugins):
        manager.set_blocked(name)
    register_modules(manager, BUILTIN_PLUGINS.items(), config)
    register_entry_points(manager, config)
    register_modules(manager, ((path, path) for path in config.plugins.modules), config, IMPORT_HINT)
    check_plugins(manager)
    return manager


def check_plugins(manager: pluggy.PluginManager) -> None:
    """A misspelled or `async` hook implementation is an error at start-up, not silence."""
    hooks = [name for name in vars(manager.hook) if not name.startswith("_")]
    known = [name for name in hooks if getattr(manager.hook, name).has_spec()]
    for name in hooks:
        caller = getattr(manager.hook, name)
        for impl in [] if caller.has_spec() else caller.get_hookimpls():
            if not impl.optionalhook:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"plugins: plugin '{plugin_label(impl)}' implements '{name}', which is no hook{hint}"
                )
    for hook_name in SYNC_ONLY_HOOKS:
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            function = impl.function
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                raise ConfigError(
                    f"plugins: plugin '{plugin_label(impl)}' implements '{hook_name}' with 'async def'; "
                    "that hook is sync only"
                )


def plugin_label(impl: pluggy.HookImpl) -> str:
    """The plugin's registered name; for one registered without a name (pluggy then uses
    its id), its module's or class's name instead of `<object at 0x...>`."""
    if not impl.plugin_name.isdigit():
        return impl.plugin_name
    plugin = impl.plugin
    if inspect.ismodule(plugin):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__name__}"
