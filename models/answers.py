"""Forgiving parsers of a small model's answers to the fleet's five task types.

They accept the usual noise of small models (preambles, labels, quotes, markdown, echoed input,
extra words) and never raise on a messy answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.prompts import TaskType, resolve_task_type

# ---- shared clean-up -------------------------------------------------------------------------------

_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|</?s>|<im_(?:start|end)>")
_MARKUP = re.compile(r"\*\*|__|`+|^#+\s*", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_QUOTES = "\"'“”‘’「」『』«»"
_LABEL = re.compile(
    r"^(?:final\s+)?(?:answer|english|translation|english\s+translation|summary|emotion|label|output|result|"
    r"response|a|entities)\s*[:：]\s*",
    re.IGNORECASE,
)
_COURTESY = re.compile(r"^(?:sure|certainly|of course|okay|ok|alright)\b[^.!:\n]*[.!,:]?\s*", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^(?:here\s+is|here's|here\s+are|below\s+is)\b[^:\n]*:\s*|"
    r"^the\s+(?:english\s+)?(?:translation|summary)\s+(?:is|of\s+the\s+text\s+is)\s*:?\s*",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NOTE = re.compile(r"^\(?(?:note|explanation|pinyin|translation notes?)\b", re.IGNORECASE)


def _clean(answer: str) -> str:
    """Drop special tokens and markdown emphasis; normalise line ends."""
    text = _SPECIAL_TOKEN.sub("", answer).replace("\r\n", "\n").replace("\r", "\n")
    return _MARKUP.sub("", text).strip()


def _unwrap(text: str) -> str:
    """Strip a bullet, a leading label and surrounding quotes from one line."""
    text = _BULLET.sub("", text.strip())
    text = _LABEL.sub("", text).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _without_preamble(text: str) -> str:
    """Remove a leading "Sure! Here is the translation:"-style sentence, on its own line or not."""
    text = _COURTESY.sub("", text, count=1)
    return _PREAMBLE.sub("", text, count=1).strip()


def _first_paragraph(text: str) -> list[str]:
    """Non-empty lines of the first paragraph that has content, after any preamble."""
    for paragraph in re.split(r"\n\s*\n", _without_preamble(text)):
        lines = [line.strip() for line in _without_preamble(paragraph).splitlines() if line.strip()]
        if lines:
            return lines
    return []


# ---- TC: emotion -----------------------------------------------------------------------------------

_EMOTION_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ["sad", "sorrow", "unhappy", "lonely", "depressed", "grief", "melancholy", "miserable"], "sad"
    ),
    **dict.fromkeys(
        ["happy", "joy", "glad", "cheerful", "delighted", "excited", "thrilled", "content"], "happy"
    ),
    **dict.fromkeys(["love", "loving", "affection", "affectionate", "adore", "romantic", "caring"], "love"),
    **dict.fromkeys(["angry", "anger", "mad", "furious", "rage", "annoyed", "irritated", "hate"], "angry"),
    **dict.fromkeys(
        ["scared", "fear", "afraid", "frightened", "terrified", "anxious", "nervous", "worried"], "scared"
    ),
    **dict.fromkeys(
        ["surprise", "surprised", "shocked", "shock", "amazed", "astonished", "stunned"], "surprise"
    ),
}
# Inflections small models produce ("happier", "saddened", "fearful", "surprising", "loved").
_EMOTION_STEMS: tuple[tuple[str, str], ...] = (
    ("happ", "happy"),
    ("joy", "happy"),
    ("sadd", "sad"),
    ("sadness", "sad"),
    ("lov", "love"),
    ("angr", "angry"),
    ("fear", "scared"),
    ("scare", "scared"),
    ("scary", "scared"),
    ("terrif", "scared"),
    ("surpris", "surprise"),
    ("amaz", "surprise"),
    ("laugh", "happy"),
    ("disappoint", "sad"),
    ("frustrat", "angry"),
    ("displeas", "angry"),
)
_NEGATIONS = frozenset({"not", "no", "never", "isn't", "isnt", "without"})
_EMOTION_MARKER = re.compile(r"(?:emotion|label|answer|category)\s*(?:is)?\s*[:：]", re.IGNORECASE)


def parse_emotion(answer: str) -> str | None:
    """The first emotion label named (synonyms such as "joy" or "fear" mapped), or None if none is.

    Text after the last "Emotion:"/"Label:"/"Answer:" marker is searched first, so an echoed input
    does not win; a label right after a negation ("not sad") is skipped.
    """
    text = _clean(answer).lower()
    markers = list(_EMOTION_MARKER.finditer(text))
    segments = [text[markers[-1].end() :], text] if markers else [text]
    for segment in segments:
        words = re.findall(r"[a-z]+(?:'[a-z]+)?", segment)
        for index, word in enumerate(words):
            label = _EMOTION_WORDS.get(word) or next(
                (e for st, e in _EMOTION_STEMS if word.startswith(st)), None
            )
            if label is not None and (index == 0 or words[index - 1] not in _NEGATIONS):
                return label
    return None


# ---- NER -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entity:
    text: str
    type: str  # one of ENTITY_TYPES


_TYPE_WORDS: dict[str, str] = {
    **dict.fromkeys(["per", "pers", "person", "persons", "people", "name", "human"], "PER"),
    **dict.fromkeys(["loc", "location", "place", "country", "city", "gpe", "region", "state"], "LOC"),
    **dict.fromkeys(
        ["org", "organization", "organisation", "company", "institution", "team", "club", "agency"], "ORG"
    ),
    **dict.fromkeys(
        ["misc", "miscellaneous", "other", "nationality", "norp", "event", "product", "language"], "MISC"
    ),
}
_BIO_TAG = re.compile(r"^(?:O|[BI]-(?:PER|LOC|ORG|MISC))$")
_NO_ENTITIES = re.compile(r"^(?:none|no (?:named )?entities|n/?a|nothing|-)\b", re.IGNORECASE)
_PAREN_ENTITY = re.compile(r"([^()\[\],;]+?)\s*[(\[]\s*([A-Za-z-]+)\s*[)\]]")
_SEPARATORS = ("|", "\t", " - ", " – ", " — ", "->", "=>", "=", ":", ",")


def _entity_type(word: str) -> str | None:
    """PER/LOC/ORG/MISC for a type word ("Person", "B-LOC", "organisation"), else None."""
    word = word.strip().strip("[]()<>.:*'\"").lower()
    if word[:2] in ("b-", "i-"):
        word = word[2:]
    return _TYPE_WORDS.get(word)


def _entity_text(text: str) -> str:
    return _unwrap(text).strip(" .,;:!?")


def _entities_in_line(line: str) -> list[Entity]:
    """Entities from one answer line in any of the accepted shapes; [] if it holds none."""
    line = _unwrap(line)
    if not line or _NO_ENTITIES.match(line):
        return []
    found = [
        Entity(_entity_text(text), kind)
        for text, word in _PAREN_ENTITY.findall(line)
        if (kind := _entity_type(word)) is not None
    ]
    if found:
        return found
    for separator in _SEPARATORS:
        if separator not in line:
            continue
        left, right = (part.strip() for part in line.split(separator, 1))
        if (kind := _entity_type(right.split("|")[0])) is not None:  # "Obama | PER"
            return [Entity(_entity_text(left), kind)]
        if (kind := _entity_type(left)) is not None:  # "PER: Obama, Merkel"
            return [Entity(_entity_text(part), kind) for part in re.split(r",|;|\band\b", right)]
    *words, last = line.split() or [""]
    if words and (kind := _entity_type(last)) is not None:  # "Barack Obama PER"
        return [Entity(_entity_text(" ".join(words)), kind)]
    return []


def parse_entities(answer: str) -> list[Entity]:
    """Entities from an answer written as `entity | TYPE` lines, or as `TYPE: a, b`, `entity (TYPE)`,
    `entity - TYPE`, `entity TYPE`, with bullets, quotes or markdown; unrecognised lines are skipped."""
    entities: list[Entity] = []
    for line in _clean(answer).splitlines():
        for entity in _entities_in_line(line):
            if entity.text and entity.text.lower() not in {"entity", "none"} and entity not in entities:
                entities.append(entity)
    return entities


def _token_key(token: str) -> str:
    """A token as compared for alignment: case-folded, outer punctuation and a possessive dropped."""
    key = token.casefold().strip(".,;:!?\"'“”‘’()[]{}")
    return re.sub(r"['’]s$", "", key) or token.casefold()


_LEADING_WORDS = re.compile(
    r"^(?:(?:the|a|an|mr|mrs|ms|dr|prof|sir|president|minister|king|queen)\.?\s+)+(?=\S)", re.IGNORECASE
)


def entities_to_bio(sentence: str, entities: list[Entity]) -> list[str]:
    """BIO tags aligned to `sentence.split()`: every occurrence of each entity is tagged.

    Leading articles and titles ("The Danube", "Dr. Achebe") are left outside the entity, as the
    CoNLL references tag them. Longer entities are placed first so "New York" wins over "York";
    entities not found in the sentence (hallucinated or reworded) are ignored.
    """
    tokens = [_token_key(token) for token in sentence.split()]
    tags = ["O"] * len(tokens)
    for entity in sorted(entities, key=lambda e: -len(e.text.split())):
        words = [_token_key(word) for word in _LEADING_WORDS.sub("", entity.text).split()]
        for start in range(len(tokens) - len(words) + 1):
            span = range(start, start + len(words))
            if words and tokens[start : start + len(words)] == words and all(tags[i] == "O" for i in span):
                tags[start : start + len(words)] = [f"B-{entity.type}"] + [f"I-{entity.type}"] * (
                    len(words) - 1
                )
    return tags


def parse_ner(answer: str, sentence: str) -> list[str]:
    """BIO tags for `sentence.split()` from the model's answer.

    An answer that is itself a BIO tag sequence of the right length is taken as is.
    """
    raw_tags = _clean(answer).replace(",", " ").split()
    if len(raw_tags) == len(sentence.split()) and all(_BIO_TAG.match(tag) for tag in raw_tags):
        return raw_tags
    return entities_to_bio(sentence, parse_entities(answer))


# ---- QA, TS, SG, chat ------------------------------------------------------------------------------

_ANSWER_LEAD = re.compile(
    r"^(?:(?:according to|based on|from) the (?:context|text|passage),?\s*|the (?:short )?answer is:?\s*)+",
    re.IGNORECASE,
)


def parse_short_answer(answer: str) -> str:
    """The short answer: first line after any preamble, label, "The answer is" and quotes; "" if none."""
    lines = _first_paragraph(_clean(answer))
    if not lines:
        return ""
    text = _unwrap(_ANSWER_LEAD.sub("", _unwrap(lines[0])))
    if text.endswith(".") and text.count(".") == 1:
        text = text[:-1]  # a sentence-final period, not part of an abbreviation like "U.S."
    return _unwrap(text)


def _prose(answer: str) -> str:
    """The first paragraph as one line: bullets, labels, notes and echoed Chinese lines removed."""
    lines = [_unwrap(line) for line in _first_paragraph(_clean(answer))]
    lines = [line for line in lines if line and not _NOTE.match(line)]
    english = [line for line in lines if not _CJK.search(line)]
    return _unwrap(" ".join(english or lines))


def parse_translation(answer: str) -> str:
    """The English translation from the answer; "" if nothing is left after clean-up."""
    return _prose(answer)


def parse_summary(answer: str) -> str:
    """The summary from the answer; "" if nothing is left after clean-up."""
    return _prose(answer)


def parse_chat(answer: str) -> str:
    """A plain chat reply, with special tokens removed and whitespace trimmed."""
    return _SPECIAL_TOKEN.sub("", answer).strip()


# ---- one entry point -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmotionAnswer:
    label: str | None  # one of EMOTION_LABELS, None if the answer named none
    raw: str


@dataclass(frozen=True, slots=True)
class NerAnswer:
    tags: tuple[str, ...]  # BIO tags, one per whitespace token of the input sentence
    entities: tuple[Entity, ...]
    raw: str


@dataclass(frozen=True, slots=True)
class TextAnswer:
    task: TaskType | None  # QA, TS, SG, or None for plain chat
    text: str
    raw: str


Answer = EmotionAnswer | NerAnswer | TextAnswer


def parse_answer(task_type: TaskType | int | str, answer: str, *, text: str = "") -> Answer:
    """Parse the model's `answer` for a task; `text` is the task's input sentence (needed for NER tags).

    Never raises on messy answers; raises UnknownTaskTypeError for a bad numeric task type.
    """
    task = resolve_task_type(task_type)
    match task:
        case TaskType.TC:
            return EmotionAnswer(parse_emotion(answer), answer)
        case TaskType.NER:
            entities = tuple(parse_entities(answer))
            return NerAnswer(tuple(parse_ner(answer, text)), entities, answer)
        case TaskType.QA:
            return TextAnswer(task, parse_short_answer(answer), answer)
        case TaskType.TS:
            return TextAnswer(task, parse_translation(answer), answer)
        case TaskType.SG:
            return TextAnswer(task, parse_summary(answer), answer)
        case None:
            return TextAnswer(None, parse_chat(answer), answer)
