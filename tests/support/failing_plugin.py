"""A plugin that fails on purpose in `on_request` when the last message is "explode"
(for tests of the plugin-error path: status, log record, metrics)."""

from __future__ import annotations

from gateway import ChatCompletionRequest, RequestContext, hookimpl


@hookimpl
def on_request(request: ChatCompletionRequest, context: RequestContext) -> None:
    if request.messages[-1].text() == "explode":
        secret_headers = dict(context.headers)  # a local a traceback printer could show
        raise RuntimeError(f"exploded on purpose ({len(secret_headers)} headers)")
