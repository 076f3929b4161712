"""Prompts for the five task types and parsers of messy small-model answers.

Answers marked "seen" were produced by SmolLM2-135M-Instruct (Q4_1) with these prompts.
"""

from __future__ import annotations

import pytest

from models.answers import (
    EmotionAnswer,
    Entity,
    NerAnswer,
    TextAnswer,
    entities_to_bio,
    parse_answer,
    parse_chat,
    parse_emotion,
    parse_entities,
    parse_ner,
    parse_short_answer,
    parse_summary,
    parse_translation,
)
from models.prompts import (
    EMOTION_LABELS,
    TaskType,
    UnknownTaskTypeError,
    build_messages,
    build_prompt,
    resolve_task_type,
    split_qa,
)

# ---- task types ------------------------------------------------------------------------------------


def test_task_types_keep_the_original_numbering() -> None:
    assert [(t.name, t.value) for t in TaskType] == [("TC", 0), ("NER", 1), ("QA", 2), ("TS", 3), ("SG", 4)]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (0, TaskType.TC),
        ("1", TaskType.NER),
        ("QA", TaskType.QA),
        ("ts", TaskType.TS),
        ("text_classification", TaskType.TC),
        ("Named-Entity Recognition", TaskType.NER),
        ("question answering", TaskType.QA),
        ("translation", TaskType.TS),
        ("summarization", TaskType.SG),
        (TaskType.SG, TaskType.SG),
    ],
)
def test_task_type_resolves_from_numbers_and_names(given: int | str, expected: TaskType) -> None:
    assert resolve_task_type(given) is expected


def test_other_task_names_resolve_to_plain_chat() -> None:
    assert resolve_task_type("arithmetic") is None


@pytest.mark.parametrize("given", [5, -1, "7", True, 1.0])
def test_bad_numeric_task_type_is_rejected(given: object) -> None:
    with pytest.raises(UnknownTaskTypeError):
        resolve_task_type(given)  # type: ignore[arg-type]


# ---- prompts ---------------------------------------------------------------------------------------


def test_every_task_prompt_ends_with_a_user_turn_holding_the_input() -> None:
    for task in TaskType:
        messages = build_messages(task, "Peter visited Paris .", context="Some context.")
        assert messages[0]["role"] == "system"
        assert messages[-1]["role"] == "user"
        assert "Peter visited Paris ." in messages[-1]["content"]


def test_example_turns_alternate_user_and_assistant() -> None:
    roles = [m["role"] for m in build_messages("NER", "Peter visited Paris .")]
    assert roles == ["system", "user", "assistant", "user"]


def test_emotion_prompt_lists_every_label() -> None:
    system = build_prompt("TC", "i feel great").system or ""
    assert all(label in system for label in EMOTION_LABELS)


def test_qa_prompt_puts_the_context_before_the_question() -> None:
    user = build_prompt(TaskType.QA, "Who won?", context="The Broncos won.").user
    assert user.index("The Broncos won.") < user.index("Who won?")


def test_qa_prompt_without_context_still_asks_the_question() -> None:
    assert build_prompt(TaskType.QA, "Who won Super Bowl 50?").user.startswith(
        "Question: Who won Super Bowl 50?"
    )


def test_unknown_task_type_is_a_plain_chat_turn() -> None:
    prompt = build_prompt("arithmetic", "What is 2+2?")
    assert (prompt.task, prompt.messages) == (None, [{"role": "user", "content": "What is 2+2?"}])


def test_each_task_gets_a_token_limit() -> None:
    assert build_prompt("TC", "x").max_new_tokens < build_prompt("SG", "x").max_new_tokens


def test_blank_text_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        build_prompt("TC", "   ")


# ---- TC: emotion -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("sad", "sad"),
        ("Sad<|im_end|>", "sad"),  # seen
        ("lonely<|im_end|>", "sad"),  # seen
        ("excited<|im_end|>", "happy"),  # seen
        ("shocked<|im_end|>", "surprise"),  # seen
        ("happier", "happy"),  # seen
        ("furious", "angry"),  # seen
        ("emotion: sadness", "sad"),  # seen
        ("**Joy**", "happy"),
        ("Emotion: LOVE.", "love"),
        ("The emotion expressed in this text is fear.", "scared"),
        ("I think the answer is: Surprise!", "surprise"),
        ("'angry'", "angry"),
        ("frustration<|im_end|>", "angry"),  # seen
        ("laughs<|im_end|>", "happy"),  # seen
        ("disappointed<|im_end|>", "sad"),  # seen
    ],
)
def test_emotion_label_is_found_in_messy_answers(answer: str, label: str) -> None:
    assert parse_emotion(answer) == label


def test_emotion_after_the_answer_marker_beats_an_echoed_input() -> None:
    assert parse_emotion("Text: i love my dog but he died\nEmotion: sad") == "sad"


def test_negated_emotion_is_skipped() -> None:
    assert parse_emotion("The text is not sad, it is happy.") == "happy"


@pytest.mark.parametrize("answer", ["neutral", "I'm so sorry to hear that you", "", "<|im_end|>"])
def test_answer_without_an_emotion_parses_to_none(answer: str) -> None:
    assert parse_emotion(answer) is None


# ---- NER -------------------------------------------------------------------------------------------


def test_entity_lines_in_the_requested_format_are_parsed() -> None:
    assert parse_entities("Obama | PER\nApple | ORG\nParis | LOC") == [
        Entity("Obama", "PER"),
        Entity("Apple", "ORG"),
        Entity("Paris", "LOC"),
    ]


def test_entities_survive_bullets_numbering_quotes_and_markdown() -> None:
    answer = 'Here are the entities:\n1. **Barack Obama** | PER\n- "Paris" | LOC\n* `Google` | Organization'
    assert parse_entities(answer) == [
        Entity("Barack Obama", "PER"),
        Entity("Paris", "LOC"),
        Entity("Google", "ORG"),
    ]


def test_entities_in_parentheses_are_parsed() -> None:
    assert parse_entities("Angela Merkel (Person), Berlin (location)") == [
        Entity("Angela Merkel", "PER"),
        Entity("Berlin", "LOC"),
    ]


def test_type_first_lines_list_several_entities() -> None:
    assert parse_entities("PER: John Smith, Mary\nMISC: German") == [
        Entity("John Smith", "PER"),
        Entity("Mary", "PER"),
        Entity("German", "MISC"),
    ]


def test_entity_dash_type_and_bio_type_words_are_parsed() -> None:
    assert parse_entities("EU - B-ORG\nBritish: MISC\nLondon LOC") == [
        Entity("EU", "ORG"),
        Entity("British", "MISC"),
        Entity("London", "LOC"),
    ]


def test_echoed_sentence_and_chatter_yield_no_entities() -> None:
    # seen: the model repeated the sentence and then explained without a type
    answer = (
        'EU rejects German call to boycott British lamb.\n\nThe entity is "EU" which is a European Union.'
    )
    assert parse_entities(answer) == []


def test_none_answer_yields_no_entities() -> None:
    assert parse_entities("None.") == []


def test_bio_tags_align_to_whitespace_tokens() -> None:
    tags = entities_to_bio(
        "EU rejects German call to boycott British lamb .", [Entity("EU", "ORG"), Entity("German", "MISC")]
    )
    assert tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "O", "O", "O"]


def test_multi_word_entity_gets_begin_and_inside_tags() -> None:
    tags = entities_to_bio(
        "Peter Blackburn visited New York", [Entity("Peter Blackburn", "PER"), Entity("New York", "LOC")]
    )
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]


def test_every_occurrence_of_an_entity_is_tagged() -> None:
    assert entities_to_bio("Paris and Paris", [Entity("Paris", "LOC")]) == ["B-LOC", "O", "B-LOC"]


def test_longer_entity_wins_over_a_contained_shorter_one() -> None:
    tags = entities_to_bio("to New York .", [Entity("York", "LOC"), Entity("New York", "ORG")])
    assert tags == ["O", "B-ORG", "I-ORG", "O"]


def test_alignment_ignores_case_attached_punctuation_and_possessives() -> None:
    tags = entities_to_bio(
        "Obama's trip to paris, France.",
        [Entity("Obama", "PER"), Entity("Paris", "LOC"), Entity("France", "LOC")],
    )
    assert tags == ["B-PER", "O", "O", "B-LOC", "B-LOC"]


def test_leading_article_and_title_stay_outside_the_entity() -> None:
    # seen: "The Danube | LOC" and "Dr. Samuel Achebe | PER"; the references tag neither "The" nor "Dr."
    tags = parse_ner(
        "The Danube | LOC\nDr. Samuel Achebe | PER", "The Danube rose as Dr. Samuel Achebe spoke"
    )
    assert tags == ["O", "B-LOC", "O", "O", "O", "B-PER", "I-PER", "O"]


def test_entity_not_in_the_sentence_is_ignored() -> None:
    # seen: "Burgers" is not in the sentence
    assert parse_ner("EU | PER\nBurgers | LOC<|im_end|>", "EU rejects lamb .") == ["B-PER", "O", "O", "O"]


def test_answer_that_is_already_a_bio_sequence_is_used_as_is() -> None:
    assert parse_ner("B-PER I-PER O B-LOC", "Peter Blackburn visited Brussels") == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
    ]


def test_tag_count_always_matches_the_token_count() -> None:
    sentence = "Peter Blackburn visited Brussels on Monday ."
    assert len(parse_ner("total garbage | | ::", sentence)) == len(sentence.split())


# ---- QA --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Denver Broncos", "Denver Broncos"),
        ("Answer: Denver Broncos.", "Denver Broncos"),
        ('The answer is "Denver Broncos".', "Denver Broncos"),
        ("According to the context, the Denver Broncos<|im_end|>", "the Denver Broncos"),
        ("Sure! Here is the answer:\n\nDenver Broncos\n\nThey beat the Panthers.", "Denver Broncos"),
        ("The U.S.", "The U.S."),
        ("The Denver Broncos won Super Bowl 50.<|im_end|>", "The Denver Broncos won Super Bowl 50"),  # seen
    ],
)
def test_short_answer_is_extracted(answer: str, expected: str) -> None:
    assert parse_short_answer(answer) == expected


def test_empty_qa_answer_parses_to_empty_text() -> None:
    assert parse_short_answer("  \n<|im_end|>") == ""


# ---- TS --------------------------------------------------------------------------------------------


def test_translation_preamble_quotes_and_notes_are_removed() -> None:
    answer = 'Sure! Here is the translation:\n\n"The weather is nice today."\n\nNote: 今天 means today.'
    assert parse_translation(answer) == "The weather is nice today."


def test_translation_label_on_the_same_line_is_removed() -> None:
    assert parse_translation("English: I like learning Chinese.<|im_end|>") == "I like learning Chinese."


def test_echoed_chinese_line_is_dropped_when_english_follows() -> None:
    assert parse_translation("我喜欢学习中文。\nI like learning Chinese.") == "I like learning Chinese."


def test_translation_lines_of_one_paragraph_are_joined() -> None:
    assert (
        parse_translation("The weather is nice.\nLet's go for a walk.")
        == "The weather is nice. Let's go for a walk."
    )


def test_untranslated_answer_is_kept_rather_than_emptied() -> None:
    # seen: the model answered in Chinese and then rambled in later paragraphs
    answer = '愉悄的愉悄的愉悄！\n\nPronounced as "愉悄" in English.'
    assert parse_translation(answer) == "愉悄的愉悄的愉悄！"


# ---- SG --------------------------------------------------------------------------------------------


def test_summary_label_and_special_tokens_are_removed() -> None:
    assert (
        parse_summary("Summary: The council approved a library.<|im_end|>")
        == "The council approved a library."
    )


def test_summary_preamble_on_the_same_line_is_removed() -> None:
    assert parse_summary("Here is a summary of the text: The council approved a library.") == (
        "The council approved a library."
    )


def test_bulleted_summary_becomes_one_line() -> None:
    answer = "Here's a short summary:\n- The council approved a library.\n- It opens in 2026."
    assert parse_summary(answer) == "The council approved a library. It opens in 2026."


# ---- chat and the single entry point ---------------------------------------------------------------


def test_chat_reply_is_only_trimmed() -> None:
    assert parse_chat("  The answer is 4.<|im_end|>") == "The answer is 4."


def test_parse_answer_returns_an_emotion_answer_for_tc() -> None:
    assert parse_answer("TC", "Sad<|im_end|>") == EmotionAnswer("sad", "Sad<|im_end|>")


def test_parse_answer_returns_tags_and_entities_for_ner() -> None:
    parsed = parse_answer(1, "Peter Blackburn | PER", text="Peter Blackburn visited Brussels")
    assert parsed == NerAnswer(
        ("B-PER", "I-PER", "O", "O"), (Entity("Peter Blackburn", "PER"),), "Peter Blackburn | PER"
    )


@pytest.mark.parametrize(
    ("task_type", "task"),
    [("QA", TaskType.QA), ("TS", TaskType.TS), ("SG", TaskType.SG), ("arithmetic", None)],
)
def test_parse_answer_returns_text_for_generative_tasks(task_type: str, task: TaskType | None) -> None:
    parsed = parse_answer(task_type, "Answer text")
    assert isinstance(parsed, TextAnswer) and parsed.task is task and parsed.text


def test_dataset_qa_text_is_split_into_context_and_question() -> None:
    text = "Context: The lighthouse was built in 1872.\nIt was automated in 1961.\nQuestion: When was it automated?"
    assert split_qa(text) == (
        "The lighthouse was built in 1872.\nIt was automated in 1961.",
        "When was it automated?",
    )


def test_qa_text_without_markers_is_all_question() -> None:
    assert split_qa("When was it automated?") == (None, "When was it automated?")


def test_dataset_qa_text_is_not_wrapped_as_a_question_twice() -> None:
    user = build_prompt(2, "Context: Built in 1872.\nQuestion: When was it built?").user
    assert user == "Context: Built in 1872.\nQuestion: When was it built?\nAnswer:"
