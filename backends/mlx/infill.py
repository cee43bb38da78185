"""Fill-in-the-middle for legacy completions' `suffix`: the prompt and suffix wrapped in
the model's FIM tokens (prefix-suffix-middle order), so it writes what goes between.

Code models name these tokens by family; the first family whose three tokens are
all in the vocabulary wins. A model with none refuses `suffix` by name.
"""

from __future__ import annotations

from typing import Any

# (prefix, suffix, middle) markers, by model family.
FIM_FAMILIES = (
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma-style
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
)


def fim_tokens(tokenizer: Any) -> tuple[int, int, int] | None:
    """The model's (prefix, suffix, middle) token ids, or None when it has no FIM tokens."""
    vocab = tokenizer.get_vocab()
    for family in FIM_FAMILIES:
        if all(marker in vocab for marker in family):
            prefix, suffix, middle = (vocab[marker] for marker in family)
            return prefix, suffix, middle
    return None


def infill_prompt(tokenizer: Any, prompt: list[int], suffix: str, markers: tuple[int, int, int]) -> list[int]:
    """`<prefix> prompt <suffix> suffix <middle>`, after the BOS the tokenizer put first, if any."""
    prefix_id, suffix_id, middle_id = markers
    bos = getattr(tokenizer, "bos_token_id", None)
    head = prompt[:1] if bos is not None and prompt[:1] == [bos] else []
    tail = list(tokenizer.encode(suffix, add_special_tokens=False))
    return [*head, prefix_id, *prompt[len(head) :], suffix_id, *tail, middle_id]
