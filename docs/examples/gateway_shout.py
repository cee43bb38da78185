"""Ten lines: refuse one topic, and shout every answer."""

import msgspec

from gateway import InvalidRequest, hookimpl


@hookimpl
def rewrite_request(request):
    if any("forbidden" in message.text().lower() for message in request.messages):
        raise InvalidRequest("Let's talk about something else.", param="messages")


@hookimpl
def on_chunk(chunk):
    return msgspec.structs.replace(chunk, text=chunk.text.upper()) if chunk.text else None
