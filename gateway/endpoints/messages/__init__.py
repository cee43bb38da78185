"""Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`): what Claude Code speaks."""

from gateway.endpoints.messages.routes import ROUTES, SCHEMAS

__all__ = ["ROUTES", "SCHEMAS"]
