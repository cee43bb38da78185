"""OpenAI's legacy completions (`/v1/completions`): raw prompts, no chat template."""

from gateway.endpoints.completions.routes import ROUTES, SCHEMAS

__all__ = ["ROUTES", "SCHEMAS"]
