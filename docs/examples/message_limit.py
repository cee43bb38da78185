"""A configured plugin: refuse conversations longer than `max_messages`.

[plugins.settings.message_limit]
max_messages = 20
"""

from typing import Annotated

import msgspec

from gateway import ChatCompletionRequest, GatewayConfig, InvalidRequest, hookimpl


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    max_messages: Annotated[int, msgspec.Meta(ge=1)] = 50


class MessageLimit:
    def __init__(self, settings: Settings) -> None:
        self.max_messages = settings.max_messages

    @hookimpl
    def rewrite_request(self, request: ChatCompletionRequest) -> None:
        if len(request.messages) > self.max_messages:
            raise InvalidRequest(f"Send at most {self.max_messages} messages", param="messages")


def make_plugin(config: GatewayConfig) -> MessageLimit:
    """Called once per app; errors in the settings name their key path."""
    return MessageLimit(config.plugins.settings_for("message_limit", Settings))
