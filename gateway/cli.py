"""`gateway serve | check-config | models`: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config, missing_local_paths

DEFAULT_CONFIG = "config.toml"


def _load(path: str) -> GatewayConfig:
    """The config, with its directory importable: `plugins.modules` may sit next to it."""
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    directory = str(Path(path).resolve().parent)
    if directory not in sys.path:
        sys.path.append(directory)  # after the installed packages: a stray json.py cannot shadow them
    return config


def serve(args: argparse.Namespace) -> None:
    import msgspec

    from gateway.app import create_app
    from gateway.lifecycle import serve as run_server
    from gateway.logs import configure_logging

    config = _load(args.config)
    server = msgspec.structs.replace(
        config.server,
        host=args.host or config.server.host,
        port=config.server.port if args.port is None else args.port,
    )
    config = msgspec.structs.replace(config, server=server)
    configure_logging(config.server.log_format, config.server.log_level)
    try:
        app = create_app(config, config_path=args.config)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_server(app, server, served_models(config))  # drains on SIGTERM/SIGINT, then exits 0


def check_config(args: argparse.Namespace) -> None:
    from gateway.app import create_app

    config = _load(args.path)
    try:
        create_app(config)  # also checks plugins and backend kinds
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    problems = missing_local_paths(config)
    for problem in problems:
        print(f"config error: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(2)
    print(f"{args.path}: ok ({len(config.models)} models)")


def pull(args: argparse.Namespace) -> None:
    """Fetch configured models' files now (progress on stderr), so the first request does not wait."""
    from gateway.backend import ModelSpec
    from gateway.errors import GatewayError
    from gateway.plugin_set import collect_backends
    from gateway.plugins import default_plugin_manager

    config = _load(args.config)
    try:
        factories = collect_backends(default_plugin_manager(config))
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for name in args.models:
        model_id = config.model_id(name)
        if model_id is None:
            print(
                f"pull: no model '{name}' in {args.config}; served: {served_models(config)}", file=sys.stderr
            )
            raise SystemExit(2)
        backend = factories[config.models[model_id].backend](ModelSpec(model_id, config.models[model_id]))
        fetch = getattr(backend, "pull", None)
        if fetch is None:
            print(f"{model_id}: nothing to pull ({config.models[model_id].backend} backend)")
            continue
        try:
            print(f"{model_id}: {fetch()}")
        except GatewayError as error:
            print(f"pull failed: {error}", file=sys.stderr)
            raise SystemExit(1) from None


def served_models(config: GatewayConfig) -> str:
    """`a (aliases: b, c), echo`: for messages that must say what is there."""
    names = [
        f"{model_id} (aliases: {', '.join(model.aliases)})" if model.aliases else model_id
        for model_id, model in config.models.items()
    ]
    return ", ".join(names) or "none"


def models(args: argparse.Namespace) -> None:
    config = _load(args.config)
    for model_id, model in config.models.items():
        aliases = f"  aliases: {', '.join(model.aliases)}" if model.aliases else ""
        print(f"{model_id}  backend: {model.backend}{aliases}")


def reload(args: argparse.Namespace) -> None:
    import httpx

    key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.post(f"{args.url.rstrip('/')}/admin/reload", headers=headers, timeout=60)
    except httpx.HTTPError as error:
        print(f"reload failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if response.status_code != 200:
        print(f"reload refused: {response.json()['error']['message']}", file=sys.stderr)
        raise SystemExit(1)
    print(f"reloaded: {', '.join(response.json()['models'])}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible model gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP server")
    serve_parser.add_argument("--config", default=DEFAULT_CONFIG)
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)
    serve_parser.set_defaults(run=serve)
    check_parser = commands.add_parser("check-config", help="validate a config file and its plugins")
    check_parser.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    check_parser.set_defaults(run=check_config)
    pull_parser = commands.add_parser("pull", help="download models' files ahead of their first request")
    pull_parser.add_argument("models", nargs="+", metavar="MODEL", help="model ids or aliases")
    pull_parser.add_argument("--config", default=DEFAULT_CONFIG)
    pull_parser.set_defaults(run=pull)
    models_parser = commands.add_parser("models", help="list the configured models")
    models_parser.add_argument("--config", default=DEFAULT_CONFIG)
    models_parser.set_defaults(run=models)
    reload_parser = commands.add_parser("reload", help="make a running server re-read its config")
    reload_parser.add_argument("--url", default="http://127.0.0.1:8000")
    reload_parser.add_argument("--admin-key", help="default: $GATEWAY_ADMIN_KEY")
    reload_parser.set_defaults(run=reload)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
