"""Train-only prompts for exit-head distillation: other templates and subjects than the hashed corpus.

Heads trained on the hashed train split alone overfit (train agreement far above calibration), so
these add variety. They never enter calibration or held-out (those stay exactly the hashed splits,
so results remain comparable), and any text that a hashed split already holds is dropped.
Written for this project; not taken from the fleet's task set, which measures the running system.
"""

from __future__ import annotations

import itertools
import logging

from models.exit_corpus import HEADLINES, REVIEWS, SENTENCES_NER, TOPICS, TRANSLATE, CorpusPrompt, corpus

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


def _classification() -> list[str]:
    prompts = [f"Is this review positive, negative or mixed? Answer in one word.\nReview: {r}" for r in _MORE_REVIEWS]
    prompts += [f"Does the writer recommend it? Answer yes or no, then give a reason.\n{r}" for r in REVIEWS]
    prompts += [f"Which emotion fits this sentence best: sad, happy, love, angry, scared or surprise?\nSentence: {s}"
                for s in _FEELINGS]
    prompts += [f"Put this headline into one category (business, sports, science, politics, technology): {h}"
                for h in HEADLINES]
    return prompts


def _ner() -> list[str]:
    sentences = SENTENCES_NER + _MORE_SENTENCES_NER
    prompts = [f"Find the named entities in this sentence and label each as PER, LOC or ORG.\n{s}" for s in sentences]
    prompts += [f"Who are the people mentioned in this sentence? {s}" for s in _MORE_SENTENCES_NER]
    prompts += [f"Which organisations are named here? {s}" for s in SENTENCES_NER[8:]]
    return prompts


def _qa() -> list[str]:
    prompts = list(_MORE_QUESTIONS)
    prompts += [f"Read the text and answer the question.\nText: {c}\nQuestion: {q}" for c, q in _MORE_PASSAGE_QA]
    prompts += [f"Give a short definition of {t}." for t in _MORE_TOPICS[:18]]
    prompts += [f"Why are {t} important? Answer in two sentences." for t in _MORE_TOPICS[18:]]
    prompts += [f"Name two advantages and two disadvantages of {t}." for t in TOPICS[::3]]
    return prompts


def _translation_summary() -> list[str]:
    prompts = [f"Translate this sentence into {lang}: {s}"
               for s, lang in zip(_MORE_TRANSLATE * 2, itertools.cycle(["French", "Spanish", "German", "Italian", "Portuguese"]))]
    prompts += [f"How do you say '{s}' in Dutch?" for s in TRANSLATE[:6]]
    prompts += [f"Summarise this review in one short sentence: {r}" for r in _MORE_REVIEWS]
    prompts += [f"Give a one-line summary: {c}" for c, _ in _MORE_PASSAGE_QA]
    prompts += [f"Summarise the main point of this sentence: {s}" for s in _FEELINGS[:8]]
    return prompts


def _generation() -> list[str]:
    prompts = [f"Write a short story about {s}." for s in _STORY_SEEDS_TRAIN]
    prompts += [f"Write a haiku about {t}." for t in _MORE_TOPICS[::2]]
    prompts += [f"Write a tweet announcing a new exhibition about {t}." for t in _MORE_TOPICS[1::3]]
    prompts += [f"Write a product description for a gadget inspired by {t}." for t in TOPICS[1::5]]
    prompts += [f"Describe a day in the life of someone who works with {t}." for t in TOPICS[2::6]]
    return prompts


_BUILDERS = {"classification": _classification, "ner": _ner, "qa": _qa,
             "translation_summary": _translation_summary, "generation": _generation}


def train_only() -> list[CorpusPrompt]:
    """Extra train prompts in a fixed order, without any text the hashed corpus holds, deduplicated."""
    seen = {prompt.text for prompt in corpus()}
    prompts: list[CorpusPrompt] = []
    for task_type, build in _BUILDERS.items():
        for text in build():
            if text not in seen:
                seen.add(text)
                prompts.append(CorpusPrompt(task_type, text, "train"))
    return prompts
