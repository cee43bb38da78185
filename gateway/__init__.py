"""An OpenAI-compatible model-serving gateway with pluggy hooks.

The public API for plugin and backend authors is what this module exports.
"""

from gateway.app import create_app
from gateway.backend import (
    Backend,
    Embedder,
    FinishReason,
    GenerationChunk,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    GenerationStats,
    ModelSpec,
    TokenLogprob,
    TokenUsage,
    ToolCallDelta,
    TopLogprob,
    wall_clock_stats,
)
from gateway.config import ConfigError, GatewayConfig, ModelConfig, load_config, parse_bytes, parse_config
from gateway.context import Identity, RequestContext
from gateway.errors import (
    AuthenticationFailed,
    BackendFailed,
    BackendUnavailable,
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    PermissionDenied,
    PluginFailed,
    RateLimited,
    UnsupportedField,
)
from gateway.hookspecs import hookimpl
from gateway.logs import write_records
from gateway.prompts import CompletionRequest, EmbeddingRequest, Embeddings, RawPrompt
from gateway.protocol import (
    CEILING_FIELDS,
    FIELDS,
    GATEWAY_FIELDS,
    SAMPLING_FIELDS,
    ChatCompletionRequest,
    FilePart,
    Handling,
    ImageUrlPart,
    InputAudioPart,
    Message,
    TextPart,
    ToolCall,
    replace,
)
from gateway.responses import ChatCompletion
from gateway.tools import Tool
from gateway.validation import named_tool_choice

__all__ = [
    "CEILING_FIELDS",
    "FIELDS",
    "GATEWAY_FIELDS",
    "SAMPLING_FIELDS",
    "AuthenticationFailed",
    "Backend",
    "BackendFailed",
    "BackendUnavailable",
    "ChatCompletion",
    "ChatCompletionRequest",
    "ClientDisconnected",
    "CompletionRequest",
    "ConfigError",
    "Embedder",
    "EmbeddingRequest",
    "Embeddings",
    "FilePart",
    "FinishReason",
    "GatewayConfig",
    "GatewayError",
    "GenerationChunk",
    "GenerationEnd",
    "GenerationEvent",
    "GenerationOptions",
    "GenerationStats",
    "Handling",
    "Identity",
    "ImageUrlPart",
    "InputAudioPart",
    "InvalidRequest",
    "Message",
    "ModelConfig",
    "ModelLoadFailed",
    "ModelNotFound",
    "ModelSpec",
    "PermissionDenied",
    "PluginFailed",
    "RateLimited",
    "RawPrompt",
    "RequestContext",
    "TextPart",
    "TokenLogprob",
    "TokenUsage",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "TopLogprob",
    "UnsupportedField",
    "create_app",
    "hookimpl",
    "load_config",
    "named_tool_choice",
    "parse_bytes",
    "parse_config",
    "replace",
    "wall_clock_stats",
    "write_records",
]
