"""Offline byte-level BPE tokenizers for the test and benchmark models.

Nothing is downloaded: a corpus of English-like prose, Python code and JSON is
generated in code from a seeded RNG and a BPE is trained on it with the
`tokenizers` library. The result is written the way Hugging Face checkpoints
ship it (tokenizer.json + tokenizer_config.json with a ChatML chat template),
so `mlx_lm.load` picks the BPE streaming detokenizer, infers `<think>` markers
and the `json_tools` tool parser exactly as it would for a Qwen3 checkpoint.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

CHAT_TEMPLATE = (Path(__file__).with_name("chat_template.jinja")).read_text(encoding="utf-8")

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS = IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# Qwen3 marks these as added tokens that are not "special": they survive
# `decode(skip_special_tokens=True)`, so reasoning and tool calls stay visible.
MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)

_WORDS = (  # noqa: SIM905 - a word list reads better as prose
    "the a an of to and in is it that for on with as was be by this are from at or have not but "
    "what all were when we there can more if out so up said about than into them only other new "
    "some could time these two may then first any like now my such make over our even most "
    "after also made many before must through back years where much your way well down should "
    "because each just those people how too little state good very world still own see men work "
    "long get here between both life being under never day same another know while last might "
    "great old year off come since against go came right used take three hello weather city "
    "paris london tokyo today tomorrow model token answer question please thanks function call "
    "result value number list string"
).split()
_NAMES = ("get_weather", "get_time", "search", "add", "lookup_user", "send_email")
_CITIES = ("Paris", "London", "Tokyo", "Berlin", "Lima", "Oslo", "Cairo", "Delhi")
_ACCENTED = ("café", "naïve", "résumé", "über", "señor", "déjà vu", "crème", "€5", "日本", "🙂")
_SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou"))


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), rng.choice(_ACCENTED))
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), str(rng.randint(0, 2025)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".!?.")


def _code(rng: random.Random) -> str:
    name, arg = rng.choice(_NAMES), rng.choice(_WORDS)
    return (
        f"def {name}({arg}: str, count: int = {rng.randint(0, 9)}) -> dict:\n"
        f'    """Return the {rng.choice(_WORDS)} for {arg}."""\n'
        f"    for i in range({rng.randint(1, 99)}):\n"
        f"        if {arg} == {rng.choice(_WORDS)!r}:\n"
        f"            return {{'{arg}': i, \"ok\": True}}\n"
        f"    return None\n"
    )


def _json(rng: random.Random) -> str:
    call = {"name": rng.choice(_NAMES), "arguments": {"city": rng.choice(_CITIES)}}
    if rng.random() < 0.5:
        call["arguments"]["days"] = rng.randint(1, 7)
    return json.dumps(call, ensure_ascii=False)


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """Made-up words, so a large vocabulary has enough distinct pairs to merge."""
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 5))) for _ in range(count)]


def corpus(vocab_size: int, seed: int = 0) -> Iterator[str]:
    """Training text sized for `vocab_size`: prose, code, JSON, then pseudo-words."""
    rng = random.Random(seed)
    for _ in range(300 + vocab_size // 8):
        kind = rng.random()
        yield _sentence(rng) if kind < 0.6 else _code(rng) if kind < 0.8 else _json(rng)
        yield "\n\n" if rng.random() < 0.3 else "\n"
    if vocab_size > 900:
        # Zipf-like reuse of a large made-up lexicon: frequent words merge first.
        lexicon = _pseudo_words(rng, vocab_size * 2)
        weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
        for _ in range(vocab_size // 4):
            yield " ".join(rng.choices(lexicon, weights, k=24)) + "\n"


@functools.lru_cache(maxsize=8)
def _trained(vocab_size: int) -> str:
    """The trained BPE (special tokens included) as tokenizer.json text; cached per size."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(vocab_size), trainer)
    return tokenizer.to_str()


_BYTE_TO_CHAR: dict[int, str] = {}


def byte_level(token: str | bytes) -> str:
    """A vocabulary entry's byte-level spelling (GPT-2 byte-to-unicode table)."""
    if not _BYTE_TO_CHAR:
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
        shifted = 0
        for byte in range(256):
            if byte in printable:
                _BYTE_TO_CHAR[byte] = chr(byte)
            else:
                _BYTE_TO_CHAR[byte] = chr(256 + shifted)
                shifted += 1
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return "".join(_BYTE_TO_CHAR[b] for b in raw)


def build_tokenizer(
    directory: str | Path,
    *,
    vocab_size: int,
    extra_tokens: Sequence[str | bytes] = (),
    chat_template: str | None = CHAT_TEMPLATE,
) -> Path:
    """Write tokenizer.json and tokenizer_config.json into `directory`.

    `vocab_size` counts the trained BPE (ChatML specials included) plus the six
    `<think>`/`<tool_call>`/`<tool_response>` markers. `extra_tokens` are whole
    strings (or raw byte strings, e.g. half a UTF-8 character) appended as single
    byte-level vocabulary entries: they decode exactly, but encoding text never
    produces them unless BPE merges happen to reach them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = json.loads(_trained(vocab_size - len(MARKUP_TOKENS)))
    vocab: dict[str, int] = data["model"]["vocab"]
    if len(vocab) + len(MARKUP_TOKENS) != vocab_size:
        raise ValueError(
            f"the generated corpus trains {len(vocab) + len(MARKUP_TOKENS)} tokens, not {vocab_size}"
        )
    for token in extra_tokens:
        if token in MARKUP_TOKENS or token in SPECIAL_TOKENS:
            continue
        vocab.setdefault(byte_level(token), len(vocab))
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return directory
