"""Prompts for exit-head self-distillation, covering the five task types, split three ways.

Written for this project (templates x subjects). The full model's own continuations of these
prompts are the distillation data. Splits are disjoint by prompt and fixed by a hash of the text:
train (fit the heads), calibration (fit the exit policy), held-out (report only).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "held_out")
_SPLIT_WEIGHTS = (60, 20, 20)  # percent of prompts per split


@dataclass(frozen=True, slots=True)
class CorpusPrompt:
    task_type: str  # classification, ner, qa, translation_summary, generation
    text: str
    split: str  # one of SPLITS


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
_LANGUAGES = ["French", "Spanish", "German", "Italian"]

_STORY_SEEDS = [
    "a robot who wants to learn to paint", "a lighthouse keeper who finds a message in a bottle",
    "a cat that can talk only on Tuesdays", "two friends lost in a snowy forest", "a dragon afraid of the dark",
    "a girl who builds a rocket in her garden", "a baker who bakes bread that makes people honest",
    "an old map found in a library book", "a city where it never stops raining", "a shy giant in a small village",
    "a boy who can hear plants", "the last tree on a distant planet", "a detective dog solving a missing sock case",
    "a musician who plays for whales", "a train that travels through time",
]


def _classification() -> list[str]:
    prompts = [f"Classify the sentiment of this review as positive, negative or neutral.\nReview: {r}" for r in REVIEWS]
    prompts += [f"What is the topic of this headline: business, sports, science, politics or technology?\nHeadline: {h}"
                for h in HEADLINES]
    prompts += [f"Is this statement true or false? Explain briefly: {t} are found only in Europe." for t in TOPICS[:20]]
    return prompts


def _ner() -> list[str]:
    prompts = [f"List the people, organisations and places mentioned in this sentence.\nSentence: {s}" for s in SENTENCES_NER]
    prompts += [f"Extract all named entities (person, location, organisation) from: {s}" for s in SENTENCES_NER]
    prompts += [f"Which city names appear in this text? {s}" for s in SENTENCES_NER[:8]]
    return prompts


def _qa() -> list[str]:
    prompts = list(_QUESTIONS)
    prompts += [f"Context: {c}\nQuestion: {q}\nAnswer:" for c, q in _PASSAGE_QA]
    prompts += [f"What are three interesting facts about {t}?" for t in TOPICS[:25]]
    prompts += [f"Explain {t} to a ten-year-old." for t in TOPICS[25:]]
    return prompts


def _translation_summary() -> list[str]:
    prompts = [f"Translate into {lang}: {s}" for s, lang in zip(TRANSLATE, itertools.cycle(_LANGUAGES))]
    prompts += [f"Translate into {lang}: {s}" for s, lang in zip(TRANSLATE, itertools.cycle(_LANGUAGES[2:] + _LANGUAGES[:2]))]
    prompts += [f"Summarise in one sentence: {c}" for c, _ in _PASSAGE_QA]
    prompts += [f"Summarise this review in five words: {r}" for r in REVIEWS[:12]]
    prompts += [f"Write a one-sentence summary of a news story titled '{h}'." for h in HEADLINES]
    return prompts


def _generation() -> list[str]:
    prompts = [f"Write a short story about {s}." for s in _STORY_SEEDS]
    prompts += [f"Write a short poem about {t}." for t in TOPICS[::2]]
    prompts += [f"Write a friendly email inviting a colleague to a talk about {t}." for t in TOPICS[1::4]]
    prompts += [f"Give me a catchy slogan for a shop that sells things related to {t}." for t in TOPICS[3::5]]
    return prompts


_BUILDERS = {"classification": _classification, "ner": _ner, "qa": _qa,
             "translation_summary": _translation_summary, "generation": _generation}


def split_of(text: str) -> str:
    """Deterministic split from a hash of the prompt text (no RNG state involved)."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    edge_train, edge_calibration = _SPLIT_WEIGHTS[0], _SPLIT_WEIGHTS[0] + _SPLIT_WEIGHTS[1]
    return "train" if bucket < edge_train else "calibration" if bucket < edge_calibration else "held_out"


def corpus() -> list[CorpusPrompt]:
    """Every prompt with its task type and split, deduplicated, in a fixed order."""
    seen: set[str] = set()
    prompts: list[CorpusPrompt] = []
    for task_type, build in _BUILDERS.items():
        for text in build():
            if text not in seen:
                seen.add(text)
                prompts.append(CorpusPrompt(task_type, text, split_of(text)))
    return prompts


def split(name: str) -> list[CorpusPrompt]:
    """Prompts of one split. Raises ValueError for an unknown split name."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; want one of {SPLITS}")
    return [prompt for prompt in corpus() if prompt.split == name]
