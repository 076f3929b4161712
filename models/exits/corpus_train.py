"""Train-only prompts for exit-head distillation: other templates and subjects than models/exits/corpus.py.

Heads trained on the corpus's train split alone overfit (train agreement far above calibration), so
these add variety. They only enter train: a prompt built on source material that the corpus puts in
calibration or held-out is dropped, so no item of those splits reaches train, however re-templated.
Written for this project; not taken from the fleet's task set, which measures the running system.
"""

from __future__ import annotations

import itertools
import logging

from models.exits.corpus import (
    HEADLINES,
    REVIEWS,
    SENTENCES_NER,
    TOPICS,
    TRANSLATE,
    Built,
    CorpusPrompt,
    build,
    corpus,
    fill,
    normalise,
    passage_questions,
    translations,
)

logger = logging.getLogger(__name__)

_MORE_TOPICS = [
    "volleyball", "honey", "trains", "clouds", "the violin", "rice farming", "comets", "whales", "castles", "windmills",
    "the Arctic", "elephants", "paper making", "hot air balloons", "the Moon", "tides", "cheese", "rivers", "ants",
    "airports", "maps", "the Sahara", "ice hockey", "pottery", "snowflakes", "sharks", "libraries", "telescopes",
    "rainbows", "chocolate", "bamboo", "the immune system", "electric guitars", "kites", "wolves", "marathons",
]

_MORE_REVIEWS = [
    "The waiter forgot our order twice, but the dessert was superb.",
    "I returned the vacuum cleaner because it barely picked up dust.",
    "The yoga class was relaxing and the teacher was patient with beginners.",
    "The train was delayed for three hours and nobody told us why.",
    "These gloves are warm, soft and fit perfectly.",
    "The game looks beautiful but the story is boring.",
    "The plumber arrived on time and fixed the leak quickly.",
    "The printer jams on every second page.",
    "Nice view from the balcony, although the bed was too hard.",
    "The kids loved the zoo, especially the giraffes.",
    "The lamp flickers and the switch feels cheap.",
    "Best pizza in town, the crust is thin and crispy.",
    "The tent leaked during the first light rain.",
    "My new phone charges fast and the camera is excellent.",
    "The lecture was confusing and the slides were unreadable.",
    "The garden centre staff gave us great advice on roses.",
]

_FEELINGS = [
    "I opened the letter and burst out laughing at the silly drawing inside.",
    "When the lights went out in the old house, I could hear footsteps upstairs.",
    "He broke his promise again and I slammed the door behind me.",
    "She held my hand the whole evening and I never wanted it to end.",
    "Nobody came to my birthday party except the rain.",
    "I could not believe it: the lottery ticket had all six numbers.",
    "The dog ran to me at the station, wagging its whole body.",
    "My manager took credit for my work in front of everyone.",
    "The doctor called and said the results were perfectly fine.",
    "I lost the photos of my father when the laptop was stolen.",
    "A stranger paid for my coffee and left before I could thank him.",
    "The ice cracked under my feet in the middle of the lake.",
]

_MORE_SENTENCES_NER = [
    "Anna Berg moved from Stockholm to Toronto to work for Shopify.",
    "The World Health Organization praised Ghana for its vaccination campaign.",
    "Pedro Alvarez scored twice for Real Madrid against Juventus in Turin.",
    "Tesla will build a factory near Monterrey, Mexico, said Elon Musk.",
    "The Louvre in Paris lent three paintings to a museum in Tokyo.",
    "Fatima Zahra studies medicine at Cairo University and volunteers for UNICEF.",
    "Intel and Nokia opened a joint lab in Helsinki in November.",
    "Captain James Cook sailed from Plymouth to New Zealand in 1768.",
    "The mayor of Chicago met engineers from Boeing at O'Hare airport.",
    "Priya Nair founded a startup in Bangalore with funding from Sequoia.",
    "Greenpeace activists protested outside the Shell offices in The Hague.",
    "Hans Muller repaired clocks in Zurich for over forty years.",
]

_MORE_QUESTIONS = [
    "How do airplanes stay in the air?", "What is the largest desert in the world?", "Why do we need sleep?",
    "How many continents are there?", "What is the freezing point of water in Fahrenheit?", "Who invented the telephone?",
    "Why does ice float on water?", "What is the smallest planet in the solar system?", "How do fish breathe underwater?",
    "What is photosynthesis in simple words?", "How many bones are in the human body?", "What is inflation?",
    "Why is the Dead Sea called dead?", "What does a carpenter do?", "How does a rainbow form?",
    "What is the capital of Japan?", "Why do onions make you cry?", "How far is the Moon from the Earth?",
    "What are the three states of matter?", "Who was Albert Einstein?", "What is a volcano made of?",
    "How do bees communicate?", "What is the longest river in Europe?", "Why do stars twinkle?",
]

_MORE_PASSAGE_QA = [
    ("The Sahara covers about nine million square kilometres across North Africa.", "How large is the Sahara?"),
    ("Octopuses have three hearts and blue blood.", "How many hearts does an octopus have?"),
    ("The Berlin Wall fell in November 1989, after 28 years.", "When did the Berlin Wall fall?"),
    ("Bamboo can grow almost one metre in a single day.", "How fast can bamboo grow?"),
    ("The first email was sent by Ray Tomlinson in 1971.", "Who sent the first email?"),
    ("Venus is the hottest planet because its thick atmosphere traps heat.", "Why is Venus so hot?"),
    ("The violin usually has four strings tuned in fifths.", "How many strings does a violin have?"),
    ("Lake Baikal in Siberia holds about a fifth of the world's fresh surface water.", "Where is Lake Baikal?"),
]

_MORE_TRANSLATE = [
    "The shop closes early on Sundays.", "I forgot my umbrella at the office.", "How much does this jacket cost?",
    "My sister is a nurse in a small hospital.", "We watched a film and ate popcorn.", "The soup is too salty.",
    "Please close the window, it is cold.", "They moved to a new flat last week.", "I need to buy bread and milk.",
    "The bus to the airport leaves every hour.",
]

_STORY_SEEDS_TRAIN = [
    "a clockmaker who can pause time for one minute", "a penguin who wants to see the desert",
    "a girl who finds a key that opens every door", "a grandmother who was once a famous pilot",
    "a village where everyone forgets one word each day", "a robot gardener on Mars",
    "a fox who runs a small bookshop", "two rival chefs forced to cook together", "a ghost who is afraid of people",
    "a boy who trades his shadow for a wish", "a pair of socks separated in the laundry", "the first snow in a desert town",
]


def _classification() -> Built:
    return (fill("Is this review positive, negative or mixed? Answer in one word.\nReview: {}", _MORE_REVIEWS)
            + fill("Does the writer recommend it? Answer yes or no, then give a reason.\n{}", REVIEWS)
            + fill("Which emotion fits this sentence best: sad, happy, love, angry, scared or surprise?\nSentence: {}",
                   _FEELINGS)
            + fill("Put this headline into one category (business, sports, science, politics, technology): {}",
                   HEADLINES))


def _ner() -> Built:
    return (fill("Find the named entities in this sentence and label each as PER, LOC or ORG.\n{}",
                 SENTENCES_NER + _MORE_SENTENCES_NER)
            + fill("Who are the people mentioned in this sentence? {}", _MORE_SENTENCES_NER)
            + fill("Which organisations are named here? {}", SENTENCES_NER[8:]))


def _qa() -> Built:
    return (fill("{}", _MORE_QUESTIONS)
            + passage_questions("Read the text and answer the question.\nText: {}\nQuestion: {}", _MORE_PASSAGE_QA)
            + fill("Give a short definition of {}.", _MORE_TOPICS[:18])
            + fill("Why are {} important? Answer in two sentences.", _MORE_TOPICS[18:])
            + fill("Name two advantages and two disadvantages of {}.", TOPICS[::3]))


def _translation_summary() -> Built:
    languages = itertools.cycle(["French", "Spanish", "German", "Italian", "Portuguese"])
    return (translations("Translate this sentence into {}: {}", _MORE_TRANSLATE * 2, languages)
            + fill("How do you say '{}' in Dutch?", TRANSLATE[:6])
            + fill("Summarise this review in one short sentence: {}", _MORE_REVIEWS)
            + fill("Give a one-line summary: {}", [c for c, _ in _MORE_PASSAGE_QA])
            + fill("Summarise the main point of this sentence: {}", _FEELINGS[:8]))


def _generation() -> Built:
    return (fill("Write a short story about {}.", _STORY_SEEDS_TRAIN)
            + fill("Write a haiku about {}.", _MORE_TOPICS[::2])
            + fill("Write a tweet announcing a new exhibition about {}.", _MORE_TOPICS[1::3])
            + fill("Write a product description for a gadget inspired by {}.", TOPICS[1::5])
            + fill("Describe a day in the life of someone who works with {}.", TOPICS[2::6]))


_BUILDERS = {"classification": _classification, "ner": _ner, "qa": _qa,
             "translation_summary": _translation_summary, "generation": _generation}


def train_only() -> list[CorpusPrompt]:
    """Extra train prompts in a fixed order, deduplicated, none built on calibration or held-out material."""
    prompts = corpus()
    split_of_source = {normalise(source): prompt.split for prompt in prompts for source in prompt.sources}

    def train_or_drop(sources: tuple[str, ...]) -> str | None:
        splits = {split_of_source.get(normalise(source), "train") for source in sources}
        return "train" if splits == {"train"} else None

    return build(_BUILDERS, train_or_drop, skip={prompt.text for prompt in prompts})
