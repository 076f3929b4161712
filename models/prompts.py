"""Chat prompts for the fleet's five task types, and forgiving parsers of a small model's answers.

Edge and cloud both build prompts and parse answers here, so the same task gets the same prompt
wherever it runs. Prompts are short because the edge model is small; parsers accept the usual
noise of small models (preambles, labels, quotes, markdown, echoed input, extra words).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import TypedDict

logger = logging.getLogger(__name__)


class TaskType(IntEnum):
    """The five evaluated task types, with the numbering the datasets and the center use."""

    TC = 0  # text classification: the emotion of a sentence
    NER = 1  # named-entity recognition: BIO tags over PER/LOC/ORG/MISC
    QA = 2  # question answering: a short answer from a context
    TS = 3  # text translation: Chinese to English
    SG = 4  # summary generation


EMOTION_LABELS: tuple[str, ...] = ("sad", "happy", "love", "angry", "scared", "surprise")
ENTITY_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC")

_TASK_ALIASES: dict[str, TaskType] = {
    **{member.name.lower(): member for member in TaskType},
    "text_classification": TaskType.TC,
    "classification": TaskType.TC,
    "emotion": TaskType.TC,
    "emotion_classification": TaskType.TC,
    "named_entity_recognition": TaskType.NER,
    "entity_recognition": TaskType.NER,
    "question_answering": TaskType.QA,
    "translation": TaskType.TS,
    "text_translation": TaskType.TS,
    "machine_translation": TaskType.TS,
    "summarization": TaskType.SG,
    "summarisation": TaskType.SG,
    "summary": TaskType.SG,
    "summary_generation": TaskType.SG,
    "text_summarization": TaskType.SG,
}


class UnknownTaskTypeError(ValueError):
    """A numeric task type outside the five, or a value that is neither a number nor a name."""


def resolve_task_type(task_type: TaskType | int | str) -> TaskType | None:
    """The task type named by a number, enum or name ("TC", "text-classification", "3"), or None.

    None means "not one of the five" (e.g. the original scheduler's "arithmetic"): run the text as a
    plain chat turn. Raises UnknownTaskTypeError for numbers outside 0-4 and non-str/int values.
    """
    if isinstance(task_type, bool) or not isinstance(task_type, int | str):
        raise UnknownTaskTypeError(f"task type must be an int or a name, got {task_type!r}")
    if isinstance(task_type, str):
        name = task_type.strip().lower().replace("-", "_").replace(" ", "_")
        if not re.fullmatch(r"[+-]?\d+", name):
            return _TASK_ALIASES.get(name)
        task_type = int(name)
    try:
        return TaskType(task_type)
    except ValueError:
        raise UnknownTaskTypeError(f"task type number must be 0-4, got {task_type}") from None


# ---- prompts ---------------------------------------------------------------------------------------


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A chat to send: system turn, worked examples, the task turn; apply the chat template to `messages`."""

    task: TaskType | None  # None = plain chat
    system: str | None
    examples: tuple[tuple[str, str], ...]  # (user, assistant) turns shown before the task
    user: str
    max_new_tokens: int  # enough for a well-formed answer to this task

    @property
    def messages(self) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        for example_user, example_assistant in self.examples:
            messages.append({"role": "user", "content": example_user})
            messages.append({"role": "assistant", "content": example_assistant})
        messages.append({"role": "user", "content": self.user})
        return messages


@dataclass(frozen=True, slots=True)
class _TaskPrompt:
    system: str
    user: str  # format string with {text} (and {context} for QA)
    example: tuple[str, str] | None  # one worked (user, assistant) turn, already formatted
    max_new_tokens: int


# With SmolLM2-135M an instruction alone is often ignored (it echoes the input or chats); one worked
# example turn fixes the answer's shape (on 12 dataset QA items, token F1 rose from 0.21 to 0.33).
# SG answers well without one.
_TASK_PROMPTS: dict[TaskType, _TaskPrompt] = {
    TaskType.TC: _TaskPrompt(
        system=f"Classify the emotion of the text. Reply with one word: {', '.join(EMOTION_LABELS)}.",
        user="Text: {text}\nEmotion:",
        example=("Text: i hate waiting in line\nEmotion:", "angry"),
        max_new_tokens=8,
    ),
    TaskType.NER: _TaskPrompt(
        system=(
            "List the named entities in the sentence, one per line as: entity | TYPE\n"
            "TYPE is PER (person), LOC (location), ORG (organization) or MISC (other names). "
            "Reply none if there are none."
        ),
        user="Sentence: {text}",
        example=("Sentence: Obama met Apple staff in Paris .", "Obama | PER\nApple | ORG\nParis | LOC"),
        max_new_tokens=96,
    ),
    TaskType.QA: _TaskPrompt(
        system="Answer the question from the context with a short phrase copied from the context.",
        user="Context: {context}\nQuestion: {text}\nAnswer:",
        example=(
            "Context: The bridge opened in 1932. It is 500 metres long and carries trains.\n"
            "Question: How long is the bridge?\nAnswer:",
            "500 metres",
        ),
        max_new_tokens=32,
    ),
    TaskType.TS: _TaskPrompt(
        system="Translate the Chinese text into English. Reply with the English translation only.",
        user="{text}",
        example=("我很高兴。", "I am very happy."),
        max_new_tokens=160,
    ),
    TaskType.SG: _TaskPrompt(
        system="Summarize the text in one or two short sentences. Reply with the summary only.",
        user="Text: {text}\nSummary:",
        example=None,
        max_new_tokens=128,
    ),
}
CHAT_MAX_NEW_TOKENS = 256  # plain chat turns (task types outside the five)


def build_prompt(task_type: TaskType | int | str, text: str, *, context: str | None = None) -> ChatPrompt:
    """The chat prompt for `text` (the sentence, Chinese text or document; for QA the question, or
    the dataset's "Context: ...\\nQuestion: ..." text when `context` is not given).

    Raises UnknownTaskTypeError (see resolve_task_type) and ValueError if `text` is blank.
    """
    if not text.strip():
        raise ValueError("task text is empty")
    task = resolve_task_type(task_type)
    if task is None:
        return ChatPrompt(None, None, (), text.strip(), CHAT_MAX_NEW_TOKENS)
    spec = _TASK_PROMPTS[task]
    text = text.strip()
    if task is TaskType.QA and not (context and context.strip()):
        context, text = split_qa(text)
    if task is TaskType.QA and not context:
        user = f"Question: {text}\nAnswer:"
    else:
        user = spec.user.format(text=text, context=(context or "").strip())
    examples = () if spec.example is None else (spec.example,)
    return ChatPrompt(task, spec.system, examples, user, spec.max_new_tokens)


_QA_TOKEN = re.compile(
    r"^\s*context\s*[:：]\s*(?P<context>.*?)\s*question\s*[:：]\s*(?P<question>.*?)\s*$", re.I | re.S
)


def split_qa(task_text: str) -> tuple[str | None, str]:
    """(context, question) from a QA task text "Context: ...\\nQuestion: ..."; (None, text) otherwise."""
    match = _QA_TOKEN.match(task_text)
    if match is None or not match["question"]:
        return None, task_text.strip()
    return match["context"] or None, match["question"]


def build_messages(
    task_type: TaskType | int | str, text: str, *, context: str | None = None
) -> list[ChatMessage]:
    """`build_prompt(...).messages`; raises what build_prompt raises."""
    return build_prompt(task_type, text, context=context).messages


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
