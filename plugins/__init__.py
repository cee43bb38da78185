"""The built-in plugins. Each is small and imports only `gateway`'s public API,
so each doubles as an example for plugin authors (see docs/plugins.md)."""
