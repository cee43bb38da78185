"""A server-side tool: models given it in `[plugins.settings.tools]` can count words."""

from gateway import hookimpl


def word_count(text: str) -> int:
    return len(text.split())


@hookimpl
def register_tools(register):
    register(
        "word_count",
        word_count,
        description="Count the words of a text",
        parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    )
