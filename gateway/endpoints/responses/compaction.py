"""The `compaction` item's opaque content: the conversation it stands for.

OpenAI's compaction items carry an encrypted summary only its models read. A
local model has no such reader, so the item here carries the conversation
itself, losslessly (base64 of its chat messages as JSON): a later request that
sends the item back gets exactly the turns it replaced, and the prompt prefix
stays the same, so the prefix cache still hits.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from gateway.errors import InvalidRequest
from gateway.protocol import Message

PREFIX = "gw1:"
_decode = msgspec.json.Decoder(list[Message]).decode
_encode = msgspec.json.Encoder().encode


def pack(messages: list[Message]) -> str:
    return PREFIX + base64.b64encode(_encode(messages)).decode("ascii")


def unpack(content: str, param: str) -> list[Message]:
    """The messages a compaction item carries; a 400 naming `param` for anything else."""
    if not content.startswith(PREFIX):
        raise InvalidRequest("This compaction item was not made by this gateway", param=param)
    try:
        return _decode(base64.b64decode(content[len(PREFIX) :], validate=True))
    except (binascii.Error, ValueError, msgspec.ValidationError, msgspec.DecodeError):
        raise InvalidRequest("The compaction item's content is damaged", param=param) from None
