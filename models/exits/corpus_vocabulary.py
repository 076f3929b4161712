"""Train-only prompts on single words of the tokenizer's vocabulary: many more subjects, none written by hand.

The heads overfit their training prompts (session 5: argmax agreement 0.60 on train against 0.47 on
calibration at layer 20), and positions of one prompt's continuations are alike, so what the heads
see is closer to 529 examples than to 117,647. Words the tokenizer spells as whole words (a leading
space, 5-12 lower-case letters) give hundreds of further subjects under the corpus's own templates.
Every word that appears anywhere in a calibration or held-out prompt is left out, so those splits
stay apart by content. Pure: the caller passes the vocabulary's token strings.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from models.exits.corpus import (
    EXPLAIN_TO_CHILD,
    INVITATION,
    POEM,
    SLOGAN,
    STORY,
    THREE_FACTS,
    CorpusPrompt,
    normalise,
)

_WORD_START = "Ġ"  # byte-level BPE's mark of a leading space
_WORD = re.compile(r"[a-z]{5,12}")
# (task type, template): the corpus's generation and QA templates and a few of the same kinds
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("qa", THREE_FACTS), ("qa", EXPLAIN_TO_CHILD), ("generation", STORY), ("generation", POEM),
    ("generation", INVITATION), ("generation", SLOGAN),
    ("qa", "What does the word '{}' mean? Use it in a sentence."),
    ("translation_summary", "Write a one-sentence summary of a news story titled 'The truth about {}'."),
    ("classification", "Is the word '{}' mostly used as a noun, a verb or an adjective? Answer and explain briefly."),
    ("ner", "Write a sentence about {} that names a person, a city and a company, then list those names."),
)


def vocabulary_words(tokens: Iterable[str], excluded: set[str]) -> list[str]:
    """Whole lower-case words the vocabulary spells with a leading space, minus `excluded`, sorted."""
    words = {token[1:] for token in tokens if token.startswith(_WORD_START) and _WORD.fullmatch(token[1:])}
    return sorted(words - excluded)


def words_of(prompts: Iterable[CorpusPrompt]) -> set[str]:
    """Every normalised word of the prompts' texts (what vocabulary prompts must not mention)."""
    return {word for prompt in prompts for word in normalise(prompt.text).split()}


def vocabulary_prompts(words: list[str], count: int, seed: int) -> list[CorpusPrompt]:
    """`count` train prompts on distinct words drawn with `seed` (random.sample), the templates taken in turn."""
    chosen = random.Random(seed).sample(words, min(count, len(words)))
    return [CorpusPrompt(TEMPLATES[index % len(TEMPLATES)][0], TEMPLATES[index % len(TEMPLATES)][1].format(word),
                         "train", (word,)) for index, word in enumerate(chosen)]
