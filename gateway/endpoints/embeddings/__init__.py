"""OpenAI's embeddings (`/v1/embeddings`)."""

from gateway.endpoints.embeddings.routes import ROUTES, SCHEMAS

__all__ = ["ROUTES", "SCHEMAS"]
