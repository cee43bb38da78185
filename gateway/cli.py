"""`gateway serve | check-config | models`: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.config import ConfigError, GatewayConfig, load_config

DEFAULT_CONFIG = "config.toml"


def _load(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(args: argparse.Namespace) -> None:
    import msgspec

    from gateway.app import create_app
    from gateway.lifecycle import serve as run_server
    from gateway.logs import configure_logging

    config = _load(args.config)
    server = msgspec.structs.replace(
        config.server, host=args.host or config.server.host, port=args.port or config.server.port
    )
    config = msgspec.structs.replace(config, server=server)
    configure_logging(config.server.log_format, config.server.log_level)
    try:
        app = create_app(config, config_path=args.config)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    run_server(app, server)  # drains on SIGTERM/SIGINT, then exits 0


def check_config(args: argparse.Namespace) -> None:
    from gateway.app import create_app

    config = _load(args.path)
    try:
        create_app(config)  # also checks plugins and backend kinds
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{args.path}: ok ({len(config.models)} models)")


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
