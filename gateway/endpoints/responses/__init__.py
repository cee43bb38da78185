"""The OpenAI Responses API (`/v1/responses`), after the Open Responses specification."""

from gateway.endpoints.responses.routes import (
    SCHEMAS,
    compact_response,
    create_response,
    delete_response,
    retrieve_response,
)
from gateway.endpoints.responses.websocket import responses_socket

ROUTES = [create_response, compact_response, retrieve_response, delete_response, responses_socket]

__all__ = ["ROUTES", "SCHEMAS"]
