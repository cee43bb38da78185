"""Tokens used per API key, with an async hook (where real I/O, e.g. a database, would go)."""

import asyncio
from collections import Counter

import structlog

from gateway import ChatCompletion, GatewayConfig, RequestContext, hookimpl

log = structlog.get_logger("usage_meter")


class UsageMeter:
    def __init__(self) -> None:
        self.tokens: Counter[str] = Counter()

    @hookimpl
    async def on_response(self, response: ChatCompletion, context: RequestContext) -> None:
        key_id = context.identity.key_id if context.identity else "anonymous"
        self.tokens[key_id] += response.usage.total_tokens
        await asyncio.sleep(0)  # stands for `await database.add(key_id, tokens)`

    @hookimpl
    def gateway_shutdown(self) -> None:
        log.info("token usage", **self.tokens)


def make_plugin(config: GatewayConfig) -> UsageMeter:
    return UsageMeter()  # one meter per app: no global state
