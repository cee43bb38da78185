"""OpenAI chat completions (`/v1/chat/completions`) and the bench endpoint."""

from gateway.endpoints.chat.routes import ROUTES, SCHEMAS

__all__ = ["ROUTES", "SCHEMAS"]
