"""Prompts for exit-head self-distillation, covering the five task types, split three ways.

Written for this project (templates x source material). The full model's own continuations of
these prompts are the distillation data. Splits are disjoint by content, not only by prompt: every
prompt names its source material (the review, headline, sentence, passage, question, text to
translate, story seed or topic it is built on), and all prompts built on one item share its split.
Held-out (report only) is its own material, written apart with subjects no other split mentions;
the rest is split by a hash of the source text into train (fit the heads) and calibration (fit
the exit policy), so re-templating an item never carries it across splits.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "held_out")
_CALIBRATION_PERCENT = 20  # share of the train/calibration source items that go to calibration


@dataclass(frozen=True, slots=True)
class CorpusPrompt:
    task_type: str  # classification, ner, qa, translation_summary, generation
    text: str
    split: str  # one of SPLITS
    sources: tuple[str, ...] = ()  # source material in the text; sources[0] fixes the split


def normalise(text: str) -> str:
    """Lower case, words only, single spaces: how source material is compared and hashed."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def split_of(source: str) -> str:
    """Train or calibration from a hash of the normalised source item (no RNG state involved)."""
    bucket = int(hashlib.sha256(normalise(source).encode()).hexdigest()[:8], 16) % 100
    return "calibration" if bucket < _CALIBRATION_PERCENT else "train"


TOPICS = [
    "volcanoes", "honey bees", "the Roman Empire", "solar panels", "black holes", "coffee", "the Amazon river",
    "chess", "vaccines", "electric cars", "the printing press", "photosynthesis", "jazz music", "glaciers",
    "the internet", "penguins", "earthquakes", "the human heart", "bread baking", "satellites", "rainforests",
    "the Olympic Games", "recycling", "octopuses", "wind turbines", "the moon landing", "tea ceremonies",
    "bicycles", "coral reefs", "the stock market", "dinosaurs", "lighthouses", "sleep", "the Great Wall of China",
    "microchips", "tornadoes", "origami", "antibiotics", "the Silk Road", "robots", "deserts", "football",
    "the piano", "climate change", "bridges", "mushrooms", "submarines", "the Renaissance", "batteries", "owls",
]

REVIEWS = [
    "The battery died after two days and support never answered my emails.",
    "Absolutely loved the food, the staff were friendly and the prices fair.",
    "The movie was long, but the ending made it worth every minute.",
    "My package arrived broken and the replacement took a month.",
    "This keyboard is quiet, sturdy and a joy to type on.",
    "The hotel room smelled of smoke and the shower was cold.",
    "Great value for money, I would buy it again without thinking.",
    "The app crashes every time I open the camera.",
    "The concert was fine, nothing special, a bit too loud.",
    "Our guide was knowledgeable and the tour was fascinating.",
    "The shoes fell apart after a week of light running.",
    "Fast delivery and the blender works perfectly.",
    "The book started slowly but I could not put it down by chapter three.",
    "Customer service solved my problem in five minutes.",
    "The coffee was cold and the croissant was stale.",
    "A charming little museum with a lovely garden.",
    "The update made my phone slower and drained the battery.",
    "The course was clear, practical and well organised.",
    "Parking was impossible and the queue took an hour.",
    "The headphones sound great but hurt my ears after an hour.",
]

HEADLINES = [
    "Central bank raises interest rates for the third time this year",
    "Local team wins championship after dramatic penalty shootout",
    "New smartphone features a foldable screen and longer battery life",
    "Scientists discover a new species of frog in the rainforest",
    "Government announces plan to build 200 new schools",
    "Tech company reports record profits despite chip shortage",
    "Marathon runner breaks world record in Berlin",
    "Researchers develop a cheaper way to store solar energy",
    "Parliament debates new law on data privacy",
    "Film festival opens with a documentary about the ocean",
    "Hospital trials robot assistants for nurses",
    "Oil prices fall as demand slows",
]

SENTENCES_NER = [
    "Maria Lopez flew from Madrid to Berlin on Monday to meet engineers at Siemens.",
    "Apple opened a new office in Nairobi, said Tim Cook during a visit in March.",
    "The United Nations held a climate summit in Glasgow led by Alok Sharma.",
    "Yuki Tanaka joined Toyota in Nagoya after studying at Kyoto University.",
    "Amazon and Microsoft both announced data centres in Ireland this week.",
    "Professor Ahmed Khan of Oxford University spoke at the Cairo conference.",
    "Lionel Messi signed with Inter Miami and moved to Florida in 2023.",
    "The European Central Bank in Frankfurt raised rates, said Christine Lagarde.",
    "Sofia Rossi painted a mural in Naples for the city council.",
    "NASA launched the probe from Cape Canaveral with help from SpaceX.",
    "Olga Petrova teaches chemistry at the University of Warsaw in Poland.",
    "Samsung hired Daniel Kim to lead its research lab in Seoul.",
    "The Red Cross sent doctors to Lima after the floods in Peru.",
    "Emma Schmidt won the Vienna marathon, beating runners from Kenya.",
    "Google and the BBC signed an agreement in London on Friday.",
    "Carlos Mendes opened a bakery in Lisbon next to the Tagus river.",
]

_QUESTIONS = [
    "What is the capital of France?", "Why is the sky blue?", "How many legs does a spider have?",
    "What does a thermometer measure?", "Who wrote Romeo and Juliet?", "What is the boiling point of water?",
    "Why do leaves change colour in autumn?", "How does a compass work?", "What is the largest ocean on Earth?",
    "What do bees make?", "How many days are in a leap year?", "What is the main gas in the air we breathe?",
    "Why do we have seasons?", "What is the tallest mountain in the world?", "How do plants get energy?",
    "What is the speed of light roughly?", "Which planet is known as the red planet?", "What is an atom?",
    "How do vaccines work?", "What is the difference between weather and climate?", "Why is the ocean salty?",
    "What language is spoken in Brazil?", "How long does the Earth take to orbit the Sun?", "What is gravity?",
    "What causes thunder?", "How do birds fly?", "What is a prime number?", "Who painted the Mona Lisa?",
    "What is DNA?", "Why do cats purr?",
]

_PASSAGE_QA = [
    ("The Nile is about 6,650 km long and flows north into the Mediterranean Sea.", "Where does the Nile flow into?"),
    ("Marie Curie won two Nobel Prizes, one in physics and one in chemistry.", "How many Nobel Prizes did Marie Curie win?"),
    ("The first bicycle with pedals was built in the 1860s in France.", "When was the first pedal bicycle built?"),
    ("Honey never spoils because it has very little water and is acidic.", "Why does honey not spoil?"),
    ("The Eiffel Tower was finished in 1889 for the World's Fair in Paris.", "Why was the Eiffel Tower built?"),
    ("Penguins live mostly in the Southern Hemisphere, especially Antarctica.", "Where do most penguins live?"),
    ("A group of crows is called a murder.", "What is a group of crows called?"),
    ("The heart pumps about 7,000 litres of blood every day.", "How much blood does the heart pump daily?"),
    ("Mount Kilimanjaro, in Tanzania, is the highest mountain in Africa.", "In which country is Kilimanjaro?"),
    ("The Great Barrier Reef is the world's largest coral reef system.", "What is the Great Barrier Reef?"),
]

TRANSLATE = [
    "Good morning, how are you?", "The weather is nice today.", "Where is the train station?",
    "I would like a cup of coffee, please.", "My brother lives in a big city.", "We are going to the beach tomorrow.",
    "This book is very interesting.", "Can you help me find my keys?", "The children are playing in the park.",
    "I am learning to cook.", "The museum opens at nine o'clock.", "Thank you for your help.",
]

_STORY_SEEDS = [
    "a robot who wants to learn to paint", "a lighthouse keeper who finds a message in a bottle",
    "a cat that can talk only on Tuesdays", "two friends lost in a snowy forest", "a dragon afraid of the dark",
    "a girl who builds a rocket in her garden", "a baker who bakes bread that makes people honest",
    "an old map found in a library book", "a city where it never stops raining", "a shy giant in a small village",
    "a boy who can hear plants", "the last tree on a distant planet", "a detective dog solving a missing sock case",
    "a musician who plays for whales", "a train that travels through time",
]


# Held-out material: written apart from everything above and from models/exits/corpus_train.py, on
# subjects none of them mentions (tests/unit/models/exits/test_split_content.py checks it).
HELD_OUT_TOPICS = [
    "hedgehogs", "hummingbirds", "carrier pigeons", "the bagpipes", "the Incas", "sundials", "fireflies",
    "the Bayeux Tapestry",
    "the abacus", "the Panama Canal", "typewriters", "skateboarding", "sign language",
]

HELD_OUT_REVIEWS = [
    "The rental kayak had a cracked seat and the shop refused a refund.",
    "Our dentist explained every step and the cleaning did not hurt at all.",
    "The sofa looks elegant, but one cushion already sags after a month.",
    "The ferry crossing was calm, punctual and surprisingly cheap.",
    "The paint peeled off the fence within a single summer.",
]

HELD_OUT_HEADLINES = [
    "Farmers protest as drought cuts the wheat harvest by half",
    "Start-up unveils earbuds that translate conversations for travellers",
    "Veteran jockey retires after twenty seasons and 3,000 wins",
    "Senate approves the budget after an all-night session",
    "Astronomers detect water vapour on a distant exoplanet",
]

HELD_OUT_SENTENCES_NER = [
    "Ingrid Olsen left Equinor in Bergen to teach engineering at Delft University.",
    "Kwame Mensah opened a clinic in Kumasi with support from the Gates Foundation.",
    "Lufthansa and Airbus agreed on a new order at a meeting in Hamburg.",
    "Mei Lin sang at the Sydney Opera House before touring Chile with her band.",
    "Rahul Mehta of the World Bank visited Dhaka to discuss mobile banking in Bangladesh.",
]

HELD_OUT_QUESTIONS = [
    "Why do bats hang upside down?", "How does a refrigerator keep food cold?", "What do caterpillars turn into?",
    "How many players are on a basketball team?", "Why do we get goosebumps?", "What makes a boomerang come back?",
]

HELD_OUT_PASSAGE_QA = [
    ("Sloths move so slowly that algae grow in their fur, which helps them hide in the trees.",
     "Why do algae grow on sloths?"),
    ("The Rosetta Stone, found in Egypt in 1799, carries the same decree in three scripts.",
     "When was the Rosetta Stone found?"),
    ("Axolotls can regrow lost legs and even parts of their spinal cord.", "What can axolotls regrow?"),
    ("Ada Lovelace wrote what is often called the first computer program, for Charles Babbage's engine, in 1843.",
     "Who wrote the first computer program?"),
]

HELD_OUT_TRANSLATE = [
    "The post office is next to the bakery.", "My grandfather grows tomatoes in his garden.",
    "Could you speak a little more slowly?", "Our flight was cancelled because of the fog.",
    "She forgot to water the plants.",
]

HELD_OUT_STORY_SEEDS = [
    "a lonely lamppost that wants to see the sea", "a tailor who sews winter coats for mice",
    "an inventor whose umbrella can fly", "a town where singing is forbidden",
]

# Templates shared by the splits: held-out differs from train by content, not by wording.
SENTIMENT = "Classify the sentiment of this review as positive, negative or neutral.\nReview: {}"
HEADLINE_TOPIC = "What is the topic of this headline: business, sports, science, politics or technology?\nHeadline: {}"
TRUE_OR_FALSE = "Is this statement true or false? Explain briefly: {} are found only in Europe."
LIST_ENTITIES = "List the people, organisations and places mentioned in this sentence.\nSentence: {}"
EXTRACT_ENTITIES = "Extract all named entities (person, location, organisation) from: {}"
PASSAGE_QUESTION = "Context: {}\nQuestion: {}\nAnswer:"
THREE_FACTS = "What are three interesting facts about {}?"
EXPLAIN_TO_CHILD = "Explain {} to a ten-year-old."
TRANSLATE_INTO = "Translate into {}: {}"
SUMMARISE_SENTENCE = "Summarise in one sentence: {}"
SUMMARISE_REVIEW = "Summarise this review in five words: {}"
SUMMARISE_HEADLINE = "Write a one-sentence summary of a news story titled '{}'."
STORY = "Write a short story about {}."
POEM = "Write a short poem about {}."
INVITATION = "Write a friendly email inviting a colleague to a talk about {}."
SLOGAN = "Give me a catchy slogan for a shop that sells things related to {}."
LANGUAGES = ["French", "Spanish", "German", "Italian"]

Built = list[tuple[tuple[str, ...], str]]  # (source material, prompt text)


def fill(template: str, items: Iterable[str]) -> Built:
    """One prompt per source item."""
    return [((item,), template.format(item)) for item in items]


def translations(template: str, sentences: Iterable[str], languages: Iterable[str]) -> Built:
    """One prompt per sentence (languages cycle), the template taking the language then the sentence."""
    return [((s,), template.format(language, s)) for s, language in zip(sentences, languages, strict=False)]


def passage_questions(template: str, passages: Iterable[tuple[str, str]]) -> Built:
    """Source: the passage (it fixes the split), then its question."""
    return [((c, q), template.format(c, q)) for c, q in passages]


def _classification() -> Built:
    return (fill(SENTIMENT, REVIEWS) + fill(HEADLINE_TOPIC, HEADLINES) + fill(TRUE_OR_FALSE, TOPICS[:20]))


def _ner() -> Built:
    return (fill(LIST_ENTITIES, SENTENCES_NER) + fill(EXTRACT_ENTITIES, SENTENCES_NER)
            + fill("Which city names appear in this text? {}", SENTENCES_NER[:8]))


def _qa() -> Built:
    return (fill("{}", _QUESTIONS) + passage_questions(PASSAGE_QUESTION, _PASSAGE_QA)
            + fill(THREE_FACTS, TOPICS[:25]) + fill(EXPLAIN_TO_CHILD, TOPICS[25:]))


def _translation_summary() -> Built:
    return (translations(TRANSLATE_INTO, TRANSLATE, itertools.cycle(LANGUAGES))
            + translations(TRANSLATE_INTO, TRANSLATE, itertools.cycle(LANGUAGES[2:] + LANGUAGES[:2]))
            + fill(SUMMARISE_SENTENCE, [c for c, _ in _PASSAGE_QA]) + fill(SUMMARISE_REVIEW, REVIEWS[:12])
            + fill(SUMMARISE_HEADLINE, HEADLINES))


def _generation() -> Built:
    return (fill(STORY, _STORY_SEEDS) + fill(POEM, TOPICS[::2]) + fill(INVITATION, TOPICS[1::4])
            + fill(SLOGAN, TOPICS[3::5]))


def _held_out_classification() -> Built:
    return (fill(SENTIMENT, HELD_OUT_REVIEWS[:4]) + fill(HEADLINE_TOPIC, HELD_OUT_HEADLINES[:3])
            + fill(TRUE_OR_FALSE, HELD_OUT_TOPICS[:3]))


def _held_out_ner() -> Built:
    return fill(LIST_ENTITIES, HELD_OUT_SENTENCES_NER) + fill(EXTRACT_ENTITIES, HELD_OUT_SENTENCES_NER)


def _held_out_qa() -> Built:
    return (fill("{}", HELD_OUT_QUESTIONS) + passage_questions(PASSAGE_QUESTION, HELD_OUT_PASSAGE_QA)
            + fill(THREE_FACTS, HELD_OUT_TOPICS[3:7]) + fill(EXPLAIN_TO_CHILD, HELD_OUT_TOPICS[7:10]))


def _held_out_translation_summary() -> Built:
    return (translations(TRANSLATE_INTO, HELD_OUT_TRANSLATE, itertools.cycle(LANGUAGES))
            + fill(SUMMARISE_SENTENCE, [c for c, _ in HELD_OUT_PASSAGE_QA[:2]])
            + fill(SUMMARISE_REVIEW, HELD_OUT_REVIEWS[2:]) + fill(SUMMARISE_HEADLINE, HELD_OUT_HEADLINES[3:]))


def _held_out_generation() -> Built:
    return (fill(STORY, HELD_OUT_STORY_SEEDS) + fill(POEM, HELD_OUT_TOPICS[10:] + HELD_OUT_TOPICS[:1])
            + fill(INVITATION, HELD_OUT_TOPICS[5:7]) + fill(SLOGAN, HELD_OUT_TOPICS[10:12]))


Builders = dict[str, Callable[[], Built]]
_BUILDERS: Builders = {"classification": _classification, "ner": _ner, "qa": _qa,
                       "translation_summary": _translation_summary, "generation": _generation}
_HELD_OUT_BUILDERS: Builders = {
    "classification": _held_out_classification, "ner": _held_out_ner, "qa": _held_out_qa,
    "translation_summary": _held_out_translation_summary, "generation": _held_out_generation}


def build(builders: Builders, split_for: Callable[[tuple[str, ...]], str | None],
          skip: set[str] | None = None) -> list[CorpusPrompt]:
    """Prompts of every builder in a fixed order, deduplicated by text; `split_for` None drops a prompt."""
    seen = set(skip or ())
    prompts: list[CorpusPrompt] = []
    for task_type, builder in builders.items():
        for sources, text in builder():
            name = split_for(sources)
            if text not in seen and name is not None:
                seen.add(text)
                prompts.append(CorpusPrompt(task_type, text, name, sources))
    return prompts


def corpus() -> list[CorpusPrompt]:
    """Every prompt with its task type, split and source material, in a fixed order."""
    return (build(_BUILDERS, lambda sources: split_of(sources[0]))
            + build(_HELD_OUT_BUILDERS, lambda _sources: "held_out"))


def split(name: str) -> list[CorpusPrompt]:
    """Prompts of one split. Raises ValueError for an unknown split name."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; want one of {SPLITS}")
    return [prompt for prompt in corpus() if prompt.split == name]
