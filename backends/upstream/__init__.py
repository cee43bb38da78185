"""The `openai` backend: serve a model by forwarding to OpenAI-compatible servers.

vLLM, SGLang, TGI, llama.cpp's server, Ollama or another gateway: one model id
here, N replicas there, balanced by least outstanding requests with health
checks and failover. See docs/scale-out.md.
"""

from backends.upstream.backend import OpenAIUpstreamBackend
from backends.upstream.options import UpstreamOptions

__all__ = ["OpenAIUpstreamBackend", "UpstreamOptions"]
