"""Single-word train prompts: whole words only, never a word of calibration or held-out, deterministic."""

from __future__ import annotations

from models.exits.corpus import normalise, split
from models.exits.corpus_vocabulary import TEMPLATES, vocabulary_prompts, vocabulary_words, words_of

TOKENS = ["Ġhedgehogs", "Ġlantern", "lantern", "Ġab", "ĠCapital", "Ġgarden", "Ġorchard", "Ġmeadow", "Ġriver5",
          "Ġbicycle", "Ġthermometer", "Ġwillow", "Ġsaxophone", "Ġnebula", "Ġmosaic", "Ġcompass"]


def test_only_whole_lower_case_words_with_a_leading_space_and_not_excluded():
    words = vocabulary_words(TOKENS, excluded={"garden"})
    assert "lantern" in words and words.count("lantern") == 1
    assert not {"ab", "Capital", "capital", "river5", "garden"} & set(words)
    assert words == sorted(words)


def test_no_prompt_mentions_a_word_of_calibration_or_held_out():
    excluded = words_of(split("calibration") + split("held_out"))
    assert "hedgehogs" in excluded  # a held-out subject
    words = vocabulary_words(TOKENS, excluded)
    prompts = vocabulary_prompts(words, 8, seed=3)
    for prompt in prompts:
        assert prompt.split == "train" and prompt.sources[0] in words
        assert prompt.sources[0] not in excluded
        assert f" {prompt.sources[0]} " in f" {normalise(prompt.text)} "
    assert len({p.sources[0] for p in prompts}) == 8  # distinct words
    assert [p.text for p in prompts] == [p.text for p in vocabulary_prompts(words, 8, seed=3)]
    assert [p.text for p in prompts] != [p.text for p in vocabulary_prompts(words, 8, seed=4)]
    assert prompts[0].text == TEMPLATES[0][1].format(prompts[0].sources[0])


def test_asking_for_more_prompts_than_words_gives_one_per_word():
    words = vocabulary_words(TOKENS, set())
    assert len(vocabulary_prompts(words, 1000, seed=0)) == len(words)

