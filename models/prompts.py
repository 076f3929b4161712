"""Chat prompts for the fleet's five task types (their answers are parsed by `models.answers`).

Edge and cloud both build prompts here, so the same task gets the same prompt wherever it runs.
Prompts are short because the edge model is small.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import TypedDict


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
