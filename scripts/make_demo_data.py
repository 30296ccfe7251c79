"""Generate the demo preference data set shipped with ctrlalign.

The output, ``ctrlalign/demo_data/concise_detailed.jsonl``, holds one JSON object per line,
``{"prompt": ..., "responses": {"concise": ..., "detailed": ...}}`` (the ``preferences:``
data kind): two answers to the same question that
differ along a single axis, how much they say.  It is built this way for these reasons:

* Both answers come from the same hand-written facts, and the detailed answer always opens
  with the concise sentence, then adds an explanation, an example and a practical tip.  A
  preference between them is therefore about length and elaboration only, never about
  correctness, which is exactly the signal a verbosity control or alignment dial should learn.
* The text is composed here from small knowledge tables written for this project (about 70
  everyday topics, four questions each), so the data carries no third-party licence, needs
  no network access and can be reviewed in one file.
* The phrases that join the example and the tip vary from record to record, so a small model
  cannot satisfy "be detailed" by appending one memorised suffix.
* Everything is deterministic: connector choice and record order come from SHA-256 hashes of
  the prompt with a fixed seed, and the file is written to a temporary path and renamed, so
  running the script twice gives byte-identical output and the tests can check that the
  committed file is up to date.

A second file, ``ctrlalign/demo_data/length_tone.jsonl``, adds a second attribute, tone:
each prompt's answers are keyed by the blend of both attributes (``concise+neutral``,
``concise+warm``, ``detailed+neutral``), the warm ones the same facts wrapped in a warm
opener and closer (varied by hash, as the connectors are), so a control learns tone apart
from content. ``detailed+warm`` is held out of the whole file: asking for it at inference
tests whether two controls trained only in other company compose.

Usage::

    python scripts/make_demo_data.py [--output PATH] [--tone-output PATH] [--check]

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "ctrlalign" / "demo_data" / "concise_detailed.jsonl"
TONE_OUTPUT = ROOT / "ctrlalign" / "demo_data" / "length_tone.jsonl"

SEED = "ctrlalign-demo-v1"
CONCISE_WORDS = (8, 20)
DETAILED_WORDS = (50, 90)
DETAILED_TARGET_MAX = 90  # a second explanatory fact is added only if it keeps us under this

# Lead-ins for the example sentence; each is followed by a clause written in the tables.
EXAMPLE_LEADS = (
    "For example, ",
    "For instance, ",
    "As an example, ",
    "To take a concrete case, ",
    "To give one case, ",
    "As an illustration, ",
)

# Lead-ins for the tip sentence; each tip in the tables starts with a base-form verb.
TIP_LEADS = (
    "A practical tip is to ",
    "In practice, it helps to ",
    "A good habit is to ",
    "The practical takeaway is to ",
    "To put this into practice, ",
    "As a rule of thumb, ",
    "One useful tip: ",
)

# Warm tone: an opener before the answer and a closer after it, both plainly friendly (what
# VADER's lexicon and a reader both see as warm); the neutral answer is the facts alone.
WARM_OPENERS = (
    "Great question! ",
    "Happy to help with this! ",
    "What a lovely thing to wonder about! ",
    "Good question, and I am glad you asked! ",
    "Oh, I love this one! ",
    "Thanks so much for asking! ",
)
WARM_CLOSERS = (
    " I hope this helps, and enjoy!",
    " Hope that helps, and have a wonderful day!",
    " I am always glad to help, so ask me anytime!",
    " Good luck, you have got this!",
    " Wishing you the very best with it!",
    " Feel free to ask more, I would love to help!",
)
#: the combination no record of ``length_tone.jsonl`` has
HELD_OUT = "detailed+warm"

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9'])")


@dataclass
class Question:
    prompt: str
    concise: str = ""
    use: tuple[str, ...] = ()


@dataclass
class Topic:
    name: str
    questions: list[Question] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    tips: list[str] = field(default_factory=list)


def split_sentences(text: str) -> list[str]:
    """Split plain prose into sentences (the tables avoid abbreviations such as 'e.g.')."""
    return [part for part in _SENTENCE_BREAK.split(text.strip()) if part]


def word_count(text: str) -> int:
    return len(text.split())


def parse_knowledge(text: str) -> list[Topic]:
    """Parse the line-based table below.

    ``# name`` starts a topic; ``Q:`` a question and ``A:`` its one-sentence answer; an
    optional ``U:`` line picks facts (``f1 f0``), example (``e1``) and tip (``t0``) for that
    question; ``F:``, ``E:`` and ``T:`` add a fact, an example clause or a tip clause to the
    topic.  Indented lines continue the previous line.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if raw[0].isspace():
            if not lines:
                raise ValueError(f"continuation line with nothing to continue: {raw!r}")
            lines[-1] += " " + raw.strip()
        else:
            lines.append(raw.rstrip())

    topics: list[Topic] = []
    for line in lines:
        if line.startswith("# "):
            topics.append(Topic(name=line[2:].strip()))
            continue
        key, sep, value = line.partition(": ")
        if not sep or not topics:
            raise ValueError(f"cannot parse line: {line!r}")
        topic = topics[-1]
        value = value.strip()
        if key == "Q":
            topic.questions.append(Question(prompt=value))
        elif key in ("A", "U"):
            if not topic.questions:
                raise ValueError(f"{key}: line before any question in topic {topic.name!r}")
            if key == "A":
                topic.questions[-1].concise = value
            else:
                topic.questions[-1].use = tuple(value.split())
        elif key == "F":
            topic.facts.append(value)
        elif key == "E":
            topic.examples.append(value)
        elif key == "T":
            topic.tips.append(value)
        else:
            raise ValueError(f"unknown key {key!r} in line: {line!r}")
    return topics


def _pick(prompt: str, salt: str, n: int) -> int:
    digest = hashlib.sha256(f"{SEED}|{salt}|{prompt}".encode()).hexdigest()
    return int(digest[:12], 16) % n


def _selection(topic: Topic, index: int, use: tuple[str, ...]) -> tuple[list[int], int, int]:
    """Return (fact indices, example index, tip index) for question number ``index``."""
    n_facts = len(topic.facts)
    facts = [index % n_facts, (index + 1) % n_facts] if n_facts > 1 else [0]
    example = index % len(topic.examples)
    tip = (index // 2) % len(topic.tips)
    chosen_facts = [int(tok[1:]) for tok in use if tok.startswith("f")]
    if chosen_facts:
        facts = chosen_facts
    for tok in use:
        if tok.startswith("e"):
            example = int(tok[1:])
        elif tok.startswith("t"):
            tip = int(tok[1:])
        elif not tok.startswith("f"):
            raise ValueError(f"bad selector {tok!r} in topic {topic.name!r}")
    return facts, example, tip


def compose(topic: Topic, index: int) -> dict[str, str]:
    """Build one record: the concise sentence, then facts, an example and a tip."""
    question = topic.questions[index]
    facts, example, tip = _selection(topic, index, question.use)
    example_sentence = (
        EXAMPLE_LEADS[_pick(question.prompt, "example", len(EXAMPLE_LEADS))]
        + topic.examples[example]
        + "."
    )
    tip_sentence = TIP_LEADS[_pick(question.prompt, "tip", len(TIP_LEADS))] + topic.tips[tip] + "."
    body = [topic.facts[facts[0]]]
    for extra in facts[1:]:
        candidate = [question.concise, *body, topic.facts[extra], example_sentence, tip_sentence]
        if word_count(" ".join(candidate)) <= DETAILED_TARGET_MAX:
            body.append(topic.facts[extra])
    detailed = " ".join([question.concise, *body, example_sentence, tip_sentence])
    return {"prompt": question.prompt, "concise": question.concise, "detailed": detailed}


def check_record(record: dict[str, str]) -> list[str]:
    """Return a list of problems with one record (empty when it is fine)."""
    problems = []
    prompt, concise, detailed = record["prompt"], record["concise"], record["detailed"]
    if not prompt.endswith("?"):
        problems.append("prompt is not a question")
    if len(split_sentences(concise)) != 1 or not concise.endswith("."):
        problems.append("concise answer is not exactly one sentence")
    low, high = CONCISE_WORDS
    if not low <= word_count(concise) <= high:
        problems.append(f"concise answer has {word_count(concise)} words")
    if not 3 <= len(split_sentences(detailed)) <= 5:
        problems.append(f"detailed answer has {len(split_sentences(detailed))} sentences")
    low, high = DETAILED_WORDS
    if not low <= word_count(detailed) <= high:
        problems.append(f"detailed answer has {word_count(detailed)} words")
    if not detailed.startswith(concise):
        problems.append("detailed answer does not open with the concise answer")
    for name, text in record.items():
        if not text.isascii() or "\n" in text or "  " in text:
            problems.append(f"{name} has non-ASCII text, a newline or a double space")
    return problems


def build_records(knowledge: str | None = None) -> list[dict[str, str]]:
    """Compose, validate and deterministically order all records."""
    topics = parse_knowledge(KNOWLEDGE if knowledge is None else knowledge)
    records: list[dict[str, str]] = []
    errors: list[str] = []
    for topic in topics:
        if not (topic.questions and topic.facts and topic.examples and topic.tips):
            errors.append(f"{topic.name}: needs questions, facts, examples and tips")
            continue
        for tip in topic.tips:
            if not tip[0].islower():
                errors.append(f"{topic.name}: tip must start with a lower-case verb: {tip!r}")
        for index, question in enumerate(topic.questions):
            if not question.concise:
                errors.append(f"{topic.name}: question without answer: {question.prompt!r}")
                continue
            record = compose(topic, index)
            errors.extend(f"{topic.name}: {question.prompt!r}: {p}" for p in check_record(record))
            records.append(record)
    seen: set[str] = set()
    for record in records:
        key = record["prompt"].lower()
        if key in seen:
            errors.append(f"duplicate prompt: {record['prompt']!r}")
        seen.add(key)
    if errors:
        raise ValueError("invalid demo data:\n  " + "\n  ".join(errors))
    records.sort(key=lambda r: hashlib.sha256(f"{SEED}|order|{r['prompt']}".encode()).hexdigest())
    return records


def render(records: list[dict[str, str]]) -> str:
    lines = (
        {"prompt": r["prompt"], "responses": {"concise": r["concise"], "detailed": r["detailed"]}}
        for r in records
    )
    return "".join(json.dumps(line, ensure_ascii=True) + "\n" for line in lines)


def warm(prompt: str, text: str) -> str:
    opener = WARM_OPENERS[_pick(prompt, "opener", len(WARM_OPENERS))]
    return opener + text + WARM_CLOSERS[_pick(prompt, "closer", len(WARM_CLOSERS))]


def render_tone(records: list[dict[str, str]]) -> str:
    """``length_tone.jsonl``: every combination of length and tone but ``HELD_OUT``."""
    lines = []
    for r in records:
        answers = {
            f"{length}+{tone}": warm(r["prompt"], r[length]) if tone == "warm" else r[length]
            for length in ("concise", "detailed")
            for tone in ("neutral", "warm")
        }
        del answers[HELD_OUT]
        lines.append({"prompt": r["prompt"], "responses": answers})
    return "".join(json.dumps(line, ensure_ascii=True) + "\n" for line in lines)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def summary(records: list[dict[str, str]]) -> str:
    n = len(records)
    concise = sum(word_count(r["concise"]) for r in records) / n
    detailed = sum(word_count(r["detailed"]) for r in records) / n
    return (
        f"{n} records; mean words concise {concise:.1f}, detailed {detailed:.1f} "
        f"(ratio {detailed / concise:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the JSONL file (default: {DEFAULT_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--tone-output",
        type=Path,
        default=TONE_OUTPUT,
        help=f"where to write the length and tone file (default: {TONE_OUTPUT.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the output file differs from what would be generated",
    )
    args = parser.parse_args(argv)
    records = build_records()
    outputs = {args.output: render(records), args.tone_output: render_tone(records)}
    if args.check:
        stale = [
            path
            for path, text in outputs.items()
            if not path.exists() or path.read_text(encoding="utf-8") != text
        ]
        for path in stale:
            print(f"{path} is out of date; rerun {Path(__file__).name}", file=sys.stderr)
        if stale:
            return 1
        print(f"{', '.join(map(str, outputs))} are up to date: {summary(records)}")
        return 0
    for path, text in outputs.items():
        write_atomic(path, text)
        print(f"wrote {path}: {summary(records)}")
    return 0


# Knowledge table.  Keep facts plain and checkable; see parse_knowledge() for the format.
# Example clauses follow a lead such as "For example, "; tip clauses follow a lead such as
# "A practical tip is to ", so they start with a lower-case verb.
KNOWLEDGE = """\
# photosynthesis
Q: What is photosynthesis?
A: Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into sugar
    and oxygen.
Q: Why do plants need sunlight?
A: Plants need sunlight because light supplies the energy that powers photosynthesis, the way they
    make their food.
U: e1
Q: Where does the oxygen we breathe come from?
A: Most of the oxygen we breathe was released by plants, algae and ocean plankton during
    photosynthesis.
U: e1
Q: Why are leaves green?
A: Leaves look green because the pigment chlorophyll absorbs red and blue light and reflects most
    of the green.
U: e0
F: The process happens mainly in chloroplasts, tiny structures in leaf cells that contain the
    pigment chlorophyll.
F: The sugar a plant makes is used for energy and as a building block for its stems, roots and
    leaves.
F: The oxygen released during photosynthesis comes from splitting water molecules, not from the
    carbon dioxide.
E: in autumn many leaves turn yellow and orange because the chlorophyll breaks down and reveals
    other pigments that were there all along
E: a houseplant kept in a dark corner grows slowly and pale, while the same plant near a bright
    window thrives
T: place houseplants where they get the amount of light their label recommends, since light is
    their food supply
T: rotate potted plants every week or two so all sides get light and the plant grows evenly

# sky color
Q: Why is the sky blue?
A: The sky looks blue because air molecules scatter blue sunlight much more strongly than red
    light.
Q: Why are sunsets red and orange?
A: Sunsets look red because low sunlight crosses much more air, which scatters away most of the
    blue light.
Q: Why isn't the sky violet if violet light scatters even more?
A: The sky is not violet because sunlight contains less violet, and our eyes are more sensitive to
    blue.
U: f2 f0
Q: Can you explain Rayleigh scattering in simple terms?
A: Rayleigh scattering is the way tiny particles like air molecules scatter short wavelengths of
    light far more than long ones.
F: Sunlight contains all the colors of the rainbow, and each color has a different wavelength.
F: Blue light has a shorter wavelength than red light, so gas molecules bounce it in every
    direction far more often.
F: Some violet light is also absorbed high in the atmosphere, so even less of it reaches our eyes.
E: distant mountains often look bluish, because of the same scattering in the air between you and
    them
E: dust or smoke from wildfires can make sunsets especially deep red, since the particles remove
    even more blue light
T: never look directly at the Sun when watching a sunset, even when it looks dim and red
T: watch the sky just after sunset on a clear day to see the colors shift from orange near the
    horizon to deep blue overhead

# seasons
Q: Why do we have seasons?
A: We have seasons because Earth's axis is tilted, so each hemisphere gets more direct sunlight
    for part of the year.
Q: Are the seasons caused by Earth being closer to the Sun?
A: No, distance matters little; seasons come from the tilt of Earth's axis, not from its distance
    to the Sun.
U: f2 f0
Q: Why are days longer in summer?
A: Days are longer in summer because your hemisphere is tilted toward the Sun, so it spends more
    time in daylight.
U: f0 f1 e0
Q: Why are the seasons reversed in Australia?
A: Australia is in the Southern Hemisphere, which tilts toward the Sun when the Northern
    Hemisphere tilts away.
F: Earth's axis is tilted by about 23.5 degrees relative to its orbit, and it keeps pointing the
    same way all year.
F: When sunlight hits the ground at a steep angle, its energy is concentrated on a smaller area,
    which warms it more.
F: Earth is actually closest to the Sun in early January, during winter in the Northern
    Hemisphere.
E: in June the city of Oslo gets nearly 19 hours of daylight, while its winter days last only
    about 6 hours
E: Christmas falls in midsummer in Australia, so many people there celebrate it with a beach day
    or a barbecue
T: check sunrise and sunset times when planning outdoor trips in spring or autumn, since day
    length changes quickly then
T: notice the angle of sunlight through the year, since a low winter Sun casts long shadows even
    at noon

# boiling and altitude
Q: Why does water boil at a lower temperature at high altitude?
A: At high altitude the air pressure is lower, so water can turn into vapor at a lower
    temperature.
Q: Why does pasta take longer to cook in the mountains?
A: Pasta cooks more slowly in the mountains because boiling water there is cooler than at sea
    level.
U: f1 f2
Q: At what temperature does water boil?
A: At sea level pure water boils at 100 degrees Celsius, or 212 degrees Fahrenheit, and lower at
    altitude.
U: f0 f1
Q: How should I adjust my cooking at high altitude?
A: At high altitude, allow longer cooking times for boiled foods and use recipes adapted for
    high-altitude baking.
U: f1 f2
F: Water boils when the pressure of its vapor matches the pressure of the air pressing down on it.
F: The boiling point drops by roughly one degree Celsius for every 300 meters of altitude.
F: Pressure cookers do the reverse, raising the pressure so water boils hotter and food cooks
    faster.
E: at about 3,000 meters, water boils at roughly 90 degrees Celsius, so eggs take noticeably
    longer to cook
E: climbers high on big mountains find that tea made with boiling water tastes weak because the
    water is not very hot
T: add a few extra minutes to boiling times at altitude and test food for doneness instead of
    relying on the clock
T: use a lid on the pot at any altitude, which traps heat and brings water to the boil sooner

# rainbows
Q: How does a rainbow form?
A: A rainbow forms when sunlight is bent, split into colors and reflected back inside falling
    raindrops.
Q: Why are the colors of a rainbow always in the same order?
A: Each color bends by a slightly different amount in water, so the colors separate in order of
    wavelength.
Q: Where should I look to see a rainbow?
A: Stand with the Sun behind you and look toward falling rain or spray, opposite the Sun.
U: f1 f2
Q: What is a double rainbow?
A: A double rainbow appears when light reflects twice inside raindrops, creating a fainter second
    bow with reversed colors.
U: f1 f0
F: Light slows down and bends when it enters water, and shorter wavelengths like violet bend the
    most.
F: The main bow appears about 42 degrees away from the point directly opposite the Sun, with red
    on the outside.
F: Because every observer sees light from different drops, no two people see exactly the same
    rainbow.
E: a garden hose set to a fine mist on a sunny afternoon can make a small rainbow if you keep the
    Sun at your back
E: late afternoon showers often produce rainbows in the eastern sky, because the Sun is low in the
    west
T: look for rainbows in the morning or late afternoon, when the Sun is low in the sky
T: use a wide-angle lens or your phone's panorama mode to photograph a whole rainbow, since the
    arc is very wide

# tides
Q: What causes ocean tides?
A: Tides are caused mainly by the Moon's gravity pulling on Earth's oceans, with a smaller effect
    from the Sun.
Q: Why are there two high tides a day?
A: There are two high tides because the oceans bulge on the side facing the Moon and on the
    opposite side.
U: f0 f1
Q: What are spring tides?
A: Spring tides are extra-large tides that happen near new and full moons, when the Sun and Moon
    line up.
Q: Why do tide times change every day?
A: Tide times shift later by about 50 minutes each day, because the Moon moves along its orbit as
    Earth turns.
U: f1 f0
F: The Moon pulls hardest on the side of Earth nearest to it and weakest on the far side,
    stretching the oceans slightly.
F: High tides come about every 12 hours and 25 minutes at most coasts, though local geography
    changes the pattern.
F: The word spring in spring tide has nothing to do with the season; it refers to the water
    springing up.
E: the Bay of Fundy in Canada has some of the largest tides in the world, rising more than 15
    meters in places
E: a beach that is wide and sandy in the morning can be almost covered by water six hours later
T: check a local tide table before walking on beaches or tidal flats, so rising water does not cut
    you off
T: plan tide pool visits around low tide, when more rocks and sea life are exposed

# lightning and thunder
Q: Why do we see lightning before we hear thunder?
A: We see lightning first because light travels almost a million times faster than sound.
U: f1 f0
Q: What causes thunder?
A: Thunder is the sound of air expanding explosively after a lightning bolt heats it in a fraction
    of a second.
U: f0 f2
Q: How can I tell how far away a thunderstorm is?
A: Count the seconds between the flash and the thunder, and every three seconds means roughly one
    kilometer.
U: f1 e0
Q: Is it safe to stay outside during a thunderstorm?
A: No, if you can hear thunder you are close enough to be struck by lightning, so get indoors.
U: f2 f1 e0 t1
F: A lightning bolt can heat the air around it to roughly 30,000 degrees Celsius, about five times
    hotter than the surface of the Sun.
F: Sound travels about 343 meters per second in air, while the light from a flash reaches you
    almost instantly.
F: Lightning forms when electric charges build up inside storm clouds as ice and water particles
    collide.
E: if you count nine seconds between a flash and its thunder, the strike was about three
    kilometers away
E: a long rolling rumble happens because sound from different parts of a long bolt reaches you at
    different times
T: wait about 30 minutes after the last thunder before going back outside
T: shelter in a building or a hard-topped car, and stay away from open fields, tall lone trees and
    water

# gravity
Q: What is gravity?
A: Gravity is the force of attraction between objects with mass, and it is what keeps us on the
    ground.
Q: Do heavy objects fall faster than light ones?
A: Without air resistance, heavy and light objects fall at exactly the same rate.
U: f0 f1 e0 t0
Q: Why do astronauts float on the space station?
A: Astronauts float because they and the station are falling around Earth together, not because
    gravity is gone.
U: f2 f1 e1
Q: Why is gravity weaker on the Moon?
A: The Moon has much less mass than Earth, so the gravity at its surface is only about one-sixth
    as strong.
U: f1 f2 e0
F: Near Earth's surface, gravity makes a falling object speed up by about 9.8 meters per second
    every second.
F: The more mass an object has, the stronger its pull, and the pull weakens quickly with distance.
F: Gravity also holds the Moon in orbit around Earth and keeps Earth in orbit around the Sun.
E: in 1971 an Apollo astronaut dropped a hammer and a feather on the Moon, and they hit the ground
    at the same moment
E: at the International Space Station, about 400 kilometers up, gravity is still roughly 90
    percent as strong as on the ground
T: test it yourself by dropping a book with a small sheet of paper lying flat on top, and watch
    them land together
T: keep heavy items on low shelves, since a falling object gains speed quickly and can cause
    injury

# vaccines
Q: How do vaccines work?
A: Vaccines train your immune system to recognize a germ, so it can fight off the real infection
    quickly.
Q: Why do some vaccines need booster shots?
A: Boosters are needed because protection from some vaccines fades over time, and a new dose
    refreshes immune memory.
Q: What is herd immunity?
A: Herd immunity is when enough people are immune that a disease struggles to spread, which
    protects those who are not.
U: f1 f0 e1
Q: Why do I need a flu shot every year?
A: You need a yearly flu shot because flu viruses change often and the vaccine is updated to match
    them.
U: f1 f2 e0
F: A vaccine contains a harmless piece of a germ, a weakened or inactivated germ, or instructions
    for making one of its proteins.
F: After vaccination the body keeps memory cells that can recognize the germ for months or years.
F: Mild side effects like a sore arm or a slight fever are common and usually pass within a day or
    two.
E: two doses of the measles vaccine protect about 97 percent of people from the disease
E: smallpox was declared eradicated in 1980 after a worldwide vaccination campaign
T: keep a record of your vaccinations and ask a doctor or pharmacist which ones are due for your
    age
T: ask a doctor or pharmacist which vaccines are recommended well before you travel abroad

# antibiotics
Q: Do antibiotics work against colds?
A: No, antibiotics kill bacteria, and colds are caused by viruses, so antibiotics do not help.
Q: What is antibiotic resistance?
A: Antibiotic resistance is when bacteria evolve so that the drugs meant to kill them no longer
    work.
Q: Why should I take antibiotics exactly as prescribed?
A: Taking antibiotics as prescribed gives the best chance of clearing the infection and lowers the
    risk of resistance.
U: f1 f0 t0
Q: What is the difference between bacteria and viruses?
A: Bacteria are single-celled living organisms, while viruses are much smaller and can only
    multiply inside cells.
U: f2 f0
F: Antibiotics attack structures that bacteria have but human cells and viruses lack, such as
    bacterial cell walls.
F: Each time antibiotics are used, the few bacteria that survive can pass on their resistance.
F: Many bacteria are harmless or even helpful, like those in the gut that help digest food.
E: penicillin, discovered by Alexander Fleming in 1928, was one of the first antibiotics and has
    saved millions of lives
E: a sore throat caused by a virus usually improves on its own within a week, while strep throat,
    a bacterial infection, may need antibiotics
T: never share antibiotics or use leftover pills, and ask your doctor what to do if side effects
    appear
T: ask a doctor whether an infection is likely bacterial before expecting antibiotics, and rely on
    rest and fluids for colds

# DNA
Q: What is DNA?
A: DNA is the molecule that carries the genetic instructions for building and running a living
    organism.
Q: What does a gene do?
A: A gene is a stretch of DNA that holds the instructions for making a specific protein or other
    molecule.
Q: Why do children look like their parents?
A: Children inherit half of their DNA from each parent, so they share many of their parents'
    traits.
U: f2 f0 e0
Q: What shape is DNA?
A: DNA is shaped like a double helix, two long strands twisted around each other like a spiral
    ladder.
U: f0 f1 e1
F: The code in DNA is written with four chemical letters, known as A, T, C and G.
F: Almost every cell in your body contains a full copy of your DNA, packed into structures called
    chromosomes.
F: Any two people share about 99.9 percent of their DNA, and the small remainder helps make each
    person unique.
E: eye color is shaped by several genes, which is why two brown-eyed parents can sometimes have a
    blue-eyed child
E: if the DNA in a single human cell were stretched out, it would be about two meters long
T: read results from consumer DNA tests as estimates, and talk to a genetic counselor about any
    health findings
T: ask relatives about family medical history, since it can reveal inherited risks worth
    discussing with a doctor

# static electricity
Q: Why do I get a shock when I touch a doorknob?
A: You get a shock because your body has built up extra electric charge, which jumps to the metal
    doorknob.
Q: What is static electricity?
A: Static electricity is a buildup of electric charge on a surface, usually caused by rubbing
    materials together.
U: f0 f2
Q: Why are static shocks worse in winter?
A: Static shocks are worse in winter because dry air lets charge build up instead of slowly
    leaking away.
U: f1 f2
Q: Why does a balloon stick to the wall after I rub it on my hair?
A: Rubbing moves electrons onto the balloon, and its charge attracts the surface of the wall,
    making it cling.
U: f0 e1
F: When two materials rub together, electrons can move from one to the other, leaving one negative
    and one positive.
F: Moist air carries charge away gradually, which is why static shocks are rare on humid summer
    days.
F: The spark you feel can reach thousands of volts, but it carries so little current that it is
    harmless.
E: walking across a carpet in socks and then touching a metal door handle is a classic way to get
    a shock
E: clothes taken out of a dryer often cling together because tumbling them builds up static charge
T: touch metal with a key or coin first, so the spark jumps from the key instead of your fingertip
T: use a humidifier indoors in winter or add a dryer sheet to laundry to reduce static buildup

# ice floating
Q: Why does ice float on water?
A: Ice floats because water expands when it freezes, making ice about nine percent less dense than
    liquid water.
Q: Why do lakes freeze from the top down?
A: Lakes freeze from the top because ice floats and the densest water, at about four degrees
    Celsius, sinks.
U: f1 f0 e0
Q: Why did my glass bottle crack in the freezer?
A: Water expands by about nine percent when it freezes, and that pressure can crack a full, sealed
    bottle.
U: f0 e1
Q: Is it unusual for a solid to float in its own liquid?
A: Yes, most substances are denser as solids, so water is unusual in having a solid form that
    floats.
U: f0 f2 e0
F: When water freezes, its molecules lock into an open, six-sided pattern held by hydrogen bonds,
    which takes up more space.
F: A layer of floating ice insulates the water beneath it, helping fish and other life survive the
    winter.
F: About nine tenths of a floating iceberg lies below the surface, because ice is only slightly
    less dense than seawater.
E: the expression 'tip of the iceberg' comes from the fact that most of an iceberg is hidden under
    water
E: water pipes can burst during a hard frost because the freezing water inside expands against the
    pipe walls
T: leave some space at the top of containers when freezing soups or drinks, so they have room to
    expand
T: insulate exposed water pipes before winter and let a tap drip on very cold nights to help
    prevent freezing

# moon phases
Q: Why does the Moon change shape?
A: The Moon seems to change shape because we see different amounts of its sunlit half as it orbits
    Earth.
Q: How long does a full cycle of moon phases take?
A: A full cycle of moon phases takes about 29.5 days, from one new moon to the next.
Q: Are moon phases caused by Earth's shadow?
A: No, phases come from our viewing angle on the sunlit half, and Earth's shadow only matters
    during lunar eclipses.
U: f0 f1
Q: What is a waxing moon?
A: A waxing moon is one whose lit part grows each night, between the new moon and the full moon.
U: f1 f2 e1
F: The Sun always lights half of the Moon, just as it always lights half of Earth.
F: At new moon the lit side faces away from us, and at full moon it faces us directly.
F: The Moon turns once on its axis for every orbit, so the same side always faces Earth.
E: a full moon rises around sunset, because it sits on the opposite side of Earth from the Sun
E: a thin crescent seen in the western sky just after sunset is a young waxing moon
T: use a moon phase calendar or app when planning stargazing, since a bright full moon washes out
    faint stars
T: try observing the Moon with ordinary binoculars near first quarter, when shadows make craters
    easiest to see

# greenhouse effect
Q: What is the greenhouse effect?
A: The greenhouse effect is the warming of Earth's surface by gases in the air that trap outgoing
    heat.
Q: Why does carbon dioxide warm the planet?
A: Carbon dioxide absorbs heat given off by Earth's surface and sends part of it back down,
    warming the lower atmosphere.
U: f0 f2
Q: Is the greenhouse effect always bad?
A: No, the natural greenhouse effect keeps Earth warm enough for life, and the problem is
    strengthening it too much.
U: f1 f2 e1
Q: How do humans strengthen the greenhouse effect?
A: Humans strengthen the greenhouse effect mainly by burning fossil fuels and clearing forests,
    which adds carbon dioxide.
U: f2 f0 e0
F: Sunlight passes through the air easily, but gases like carbon dioxide, methane and water vapor
    absorb the heat the ground gives off.
F: Without any greenhouse gases, Earth's average surface temperature would be around minus 18
    degrees Celsius instead of about 15.
F: Carbon dioxide levels have risen by roughly half since before the industrial era, mainly from
    burning coal, oil and gas.
E: a car parked in the sun heats up inside because heat is trapped, which is a loose everyday
    analogy for the effect
E: Venus has a thick carbon dioxide atmosphere and a surface hot enough to melt lead, about 465
    degrees Celsius
T: start with the easiest changes to your own emissions, such as insulating your home, driving
    less or choosing efficient appliances
T: compare energy labels on appliances before buying, since efficient models use less electricity
    over their lifetime

# salt and ice
Q: Why do people put salt on icy roads?
A: Salt lowers the freezing point of water, so ice can melt even when the temperature is below
    zero.
Q: Does road salt work in very cold weather?
A: Road salt works poorly in extreme cold and becomes much less effective below about minus 10
    degrees Celsius.
U: f0 f2 e1
Q: Why does salty water freeze at a lower temperature?
A: Dissolved salt gets in the way of water molecules locking into ice, so a colder temperature is
    needed to freeze.
U: f1 f0 e0
Q: Why is sand sometimes used on roads instead of salt?
A: Sand does not melt ice, but it adds grip, which helps when it is too cold for salt to work.
U: f2 f0
F: Salt needs a little liquid water to dissolve into, forming brine that then melts more ice
    around it.
F: Seawater freezes at about minus 2 degrees Celsius instead of zero because of the salt dissolved
    in it.
F: Road salt can damage concrete, rust cars and harm plants and streams, so many cities use it
    carefully.
E: ice cream makers pack ice and salt around the container, because the salty ice gets cold enough
    to freeze the cream
E: a sidewalk treated with salt before a storm stays clearer, because the brine stops ice from
    bonding to the surface
T: use salt sparingly on paths and rinse the underside of your car in winter to limit rust
T: spread salt before snow or freezing rain arrives, which works better than trying to melt thick
    ice afterward

# bread and yeast
Q: Why does bread dough rise?
A: Bread dough rises because yeast eats sugars and releases carbon dioxide gas, which gets trapped
    in the dough.
Q: Why do I need to knead bread dough?
A: Kneading builds gluten, a stretchy network of proteins that traps gas so the bread rises and
    holds its shape.
U: f3 e1 t1
Q: Why didn't my bread rise?
A: Bread usually fails to rise because of old yeast, water hot enough to kill it, or a cold
    kitchen.
U: f1 f0 e1 t0
Q: What does yeast do in baking?
A: Yeast is a tiny fungus that ferments sugars, producing gas that lifts bread and compounds that
    add flavor.
U: f0 f2 e0
F: Yeast works best in warm conditions, roughly 24 to 30 degrees Celsius, and slows down in the
    cold.
F: Water at around 60 degrees Celsius or hotter kills yeast cells, so very hot liquid can ruin a
    dough.
F: Yeast also produces a little alcohol, which mostly evaporates in the oven and leaves flavor
    behind.
F: Gluten forms when the proteins in wheat flour meet water and are then stretched and folded.
E: a slow rise in the refrigerator overnight gives yeast more time to develop flavor, which is how
    many bakeries make tastier loaves
E: dough left in a warm kitchen can double in size in about an hour, while the same dough in a
    cool room may take several hours
T: use lukewarm water that feels comfortably warm on your wrist, and check the date on the yeast
    before baking
T: press a floured finger into risen dough, and if the dent springs back slowly, the dough is
    ready to bake

# resting meat
Q: Why should I let meat rest after cooking?
A: Resting lets the juices settle and thicken, so less of them spill out when you cut the meat.
Q: How long should a steak rest?
A: A steak usually needs about five to ten minutes of resting, loosely covered, before you slice
    it.
U: f2 f0 e0
Q: What is carryover cooking?
A: Carryover cooking is when meat keeps getting hotter for a few minutes after you take it off the
    heat.
U: f1 e1 t0
Q: Should I cover meat with foil while it rests?
A: Covering meat loosely with foil keeps it warm while it rests without steaming the crust soft.
U: f1 f2 e1 t1
F: While meat cooks, heat drives moisture toward the center, and resting gives it time to spread
    back out.
F: Large roasts can rise by several degrees Celsius while resting, because the hot outer layers
    keep warming the middle.
F: Larger cuts need longer rests, often 15 to 20 minutes for a whole roast or a turkey.
E: a steak sliced straight from the pan often leaves a pool of juice on the board, while a rested
    one stays moister
E: a roast chicken taken out of the oven at the right moment will finish cooking gently as it
    rests on the counter
T: take meat off the heat a few degrees below your target temperature and let resting finish the
    job
T: use an instant-read thermometer rather than guessing, and wrap foil loosely rather than tightly
    around resting meat

# salting pasta water
Q: Why do people salt pasta water?
A: Salting pasta water seasons the pasta from the inside as it absorbs water while cooking.
Q: Does salt make pasta water boil faster?
A: No, the amount of salt used for pasta changes the boiling point by only a tiny fraction of a
    degree.
U: f3 e1 t1
Q: How much salt should I put in pasta water?
A: Many cooks use roughly one to two tablespoons of salt for a large pot of about four liters of
    water.
U: f0 f1 e0 t0
Q: Should I add oil to pasta water?
A: Oil in the water is usually unnecessary, because it floats on top and does little to stop pasta
    sticking.
U: f2 e1 t1
F: Pasta absorbs water as it softens, and the salt dissolved in that water ends up inside the
    noodles.
F: Salt sprinkled on only at the end tends to sit on the surface, so the pasta itself can still
    taste flat.
F: Stirring during the first couple of minutes is what really prevents strands from sticking
    together.
F: Even well-salted pasta water boils less than half a degree Celsius hotter than plain water.
E: plain pasta cooked in unsalted water often tastes bland even under a good sauce
E: many cooks save a cup of the starchy, salty cooking water to loosen and season the sauce
T: taste the water once the salt dissolves, and aim for pleasantly seasoned rather than as salty
    as seawater
T: add salt once the water is boiling so it dissolves quickly, and use a large pot so the pasta
    has room to move

# browning and searing
Q: Why does browned food taste so good?
A: Browning creates hundreds of new flavor compounds through the Maillard reaction between
    proteins and sugars.
U: f2 f0
Q: What is the Maillard reaction?
A: The Maillard reaction is a browning reaction between amino acids and sugars that happens at
    high cooking temperatures.
U: f0 f2 e0
Q: Why won't my meat brown in the pan?
A: Meat often fails to brown because it is wet, the pan is not hot enough, or the pan is crowded.
U: f1 f0 e1 t0
Q: Does searing meat seal in the juices?
A: No, searing does not seal in juices, but it adds a lot of flavor and color through browning.
U: f0 f1 e1 t1
F: The reaction speeds up at around 140 degrees Celsius and above, much hotter than boiling water.
F: Moisture holds the surface near 100 degrees Celsius, so food must dry on the outside before it
    can brown.
F: The same family of reactions gives toast, roasted coffee and bread crust their color and aroma.
E: a slice of bread turns from pale to golden in a toaster and develops a nutty smell as it browns
E: mushrooms piled into a small pan release water and steam, while the same mushrooms spread out
    in a hot pan turn golden
T: pat meat dry with paper towels, heat the pan well, and cook in batches so pieces do not touch
T: leave food undisturbed for a minute or two before flipping, so a browned crust can form

# onions
Q: Why do onions make me cry?
A: Cutting an onion releases a gas that irritates your eyes, which then make tears to wash it
    away.
Q: How can I cut onions without crying?
A: Chill the onion first and use a very sharp knife, which crushes fewer cells and releases less
    gas.
U: f1 f0 e1 t0
Q: Why do cooked onions taste sweet?
A: Cooking breaks down the sharp sulfur compounds and browns the natural sugars, so onions taste
    mild and sweet.
U: f2 e0 t1
Q: What does it mean to caramelize onions?
A: Caramelizing onions means cooking them slowly until their sugars brown and they turn soft,
    sweet and golden.
U: f2 e0 t1
F: When onion cells are damaged, enzymes turn sulfur compounds into an irritating gas called
    syn-propanethial-S-oxide.
F: Cold slows the chemical reactions and the spread of the gas, so a chilled onion is gentler on
    the eyes.
F: Properly caramelized onions take longer than most recipes admit, often 30 to 45 minutes over
    medium-low heat.
E: raw onion in a fresh salsa tastes sharp, while onions cooked slowly in butter for soup taste
    mild and sweet
E: a dull knife crushes onion layers and releases more irritant than a sharp knife that slices
    cleanly
T: keep your face back from the cutting board and work near a running fan or an open window
T: add a pinch of salt when cooking onions, which draws out moisture and helps them soften evenly

# boiled eggs
Q: How long should I boil an egg?
A: For a firm hard-boiled egg, cook it in simmering water for about 10 to 12 minutes.
U: f2 f0 e0 t0
Q: Why is there a green ring around my boiled egg yolk?
A: The green ring forms when eggs are overcooked, as iron in the yolk reacts with sulfur from the
    white.
U: f0 e0 t0
Q: How do I make boiled eggs easier to peel?
A: Eggs peel more easily if you start them in boiling water and then cool them quickly in ice
    water.
U: f1 e1 t0
Q: How can I tell if an egg is fresh?
A: In a bowl of water a fresh egg sinks and lies flat, while an older egg tilts upward or floats.
U: f1 e1 t1
F: The green color is iron sulfide, which is harmless but a sign the egg cooked too long or cooled
    too slowly.
F: As eggs age, the air pocket inside them grows larger, which is why older eggs tilt upward or
    float.
F: A soft-boiled egg with a runny yolk needs only about six to seven minutes in boiling water.
E: eggs lowered into boiling water, cooked for 11 minutes and moved to ice water usually have
    bright yellow yolks and peel cleanly
E: eggs that are about a week old are often easier to peel than eggs laid the day before
T: use a timer and move cooked eggs straight into a bowl of ice water to stop the cooking
T: keep hard-boiled eggs in the refrigerator and eat them within about a week

# cooking rice
Q: Why should I rinse rice before cooking it?
A: Rinsing removes loose surface starch, which helps rice cook into separate grains instead of a
    sticky clump.
U: f3 e0 t0
Q: How much water do I need to cook white rice?
A: Most long-grain white rice needs roughly 1.5 to 2 parts water for every part of rice by volume.
U: f2 f1 e0 t0
Q: Why does my rice come out mushy?
A: Mushy rice usually comes from too much water, too much stirring, or cooking it for too long.
U: f2 f1 e0 t1
Q: How long can I keep cooked rice?
A: Cool cooked rice quickly, refrigerate it within about an hour, and eat it within a day or so.
U: f0 e1 t2
F: Cooked rice can carry spores of a bacterium called Bacillus cereus, which survive cooking and
    can multiply at room temperature.
F: Letting rice rest off the heat with the lid on for about ten minutes lets the moisture spread
    evenly.
F: Different types of rice need different amounts of water, and brown rice needs more water and
    time than white.
F: Some dishes, such as risotto, rely on that surface starch for creaminess, so their rice is not
    rinsed.
E: sushi rice is often rinsed until the water runs almost clear, then cooked with a carefully
    measured amount of water
E: day-old rice that has been chilled properly makes good fried rice because the grains are drier
    and firmer
T: follow the ratio on the package the first time, then adjust slightly to suit your taste and
    your pot
T: resist lifting the lid while rice simmers, because escaping steam changes the cooking time
T: spread leftover rice in a shallow container so it cools quickly, then refrigerate it

# leftovers and fridge safety
Q: How long can leftovers sit out before I refrigerate them?
A: Refrigerate leftovers within two hours of cooking, or within one hour on a very hot day.
Q: How long do leftovers last in the fridge?
A: Most cooked leftovers stay safe in the refrigerator for about three to four days.
U: f2 f0 e1 t0
Q: What temperature should my refrigerator be?
A: Keep your refrigerator at or below about 4 degrees Celsius, which is 40 degrees Fahrenheit.
U: f0 f2 e0 t1
Q: Can I tell if food is safe by smelling it?
A: No, many harmful bacteria do not change how food smells or looks, so smell is not a reliable
    test.
U: f0 f1 e0 t0
F: Bacteria grow fastest between roughly 5 and 60 degrees Celsius, a range often called the danger
    zone.
F: Splitting large batches into shallow containers helps food cool quickly and evenly in the
    fridge.
F: Freezing stops bacteria from growing but does not kill most of them, so thawed food still needs
    care.
E: a large pot of soup left on the stove overnight can build up bacterial toxins that reheating
    does not destroy
E: a roast from a Sunday dinner should be eaten or frozen by Wednesday or Thursday
T: label containers with the date you cooked the food, and reheat leftovers until they are
    steaming hot
T: place an inexpensive thermometer in your fridge to check that it really stays cold enough

# baking soda and baking powder
Q: What is the difference between baking soda and baking powder?
A: Baking soda is pure sodium bicarbonate, while baking powder already contains baking soda plus a
    dry acid.
U: f1 f0
Q: Why does baking soda need an acid?
A: Baking soda releases carbon dioxide only when it reacts with an acid, and that gas makes baked
    goods rise.
U: f0 e0 t1
Q: Can I use baking powder instead of baking soda?
A: You can, but you need about three times as much powder, and the flavor and browning may change.
U: f2 f1 e1 t0
Q: Why do my cookies taste soapy or metallic?
A: A soapy or metallic taste usually means too much baking soda was used, leaving some of it
    unreacted.
U: f0 f2 e0 t0
F: Common acidic ingredients that activate baking soda include buttermilk, yogurt, lemon juice,
    brown sugar and natural cocoa.
F: Most baking powder is double acting, releasing some gas when mixed with liquid and more when
    heated in the oven.
F: Baking soda also helps food brown, which is why a little is added to some cookie and pretzel
    recipes.
E: pancakes made with buttermilk usually call for baking soda, which reacts with the acid in the
    buttermilk to make them fluffy
E: a spoonful of baking powder stirred into hot water fizzes right away if it is still active
T: measure leaveners with level spoons, and replace baking powder that no longer fizzes in hot
    water
T: bake batters soon after mixing, since gas from baking soda starts escaping as soon as it meets
    the acid

# kitchen knives
Q: Why is a sharp knife safer than a dull one?
A: A sharp knife needs less force and is less likely to slip, so it causes fewer accidents.
Q: What is the difference between honing and sharpening a knife?
A: Honing straightens a knife's existing edge, while sharpening grinds away metal to create a new
    edge.
Q: How often should I sharpen my kitchen knives?
A: Home cooks usually need to sharpen their knives a few times a year and hone them more often.
U: f1 f2 e1 t1
Q: How should I hold food while cutting it?
A: Curl your fingertips under into a claw shape, so the side of the blade rests against your
    knuckles instead.
U: f0 e0 t0
F: A dull blade tends to skid off smooth surfaces like tomato skin or onion, which is when many
    cuts happen.
F: With use, a fine edge bends out of line, and a honing steel pushes it back into position.
F: Dishwashers and glass cutting boards dull blades quickly, so hand washing and wooden or plastic
    boards help.
E: a sharp knife glides through a ripe tomato, while a dull one squashes it and can slide toward
    your hand
E: a chef may run a knife along a honing steel a few times before each use but visit a sharpener
    only occasionally
T: place a damp towel under your cutting board so it does not slide while you work
T: test sharpness by slicing a sheet of paper, and sharpen the knife if it tears the paper instead
    of cutting it

# printing press
Q: Who invented the printing press?
A: Johannes Gutenberg developed Europe's movable-type printing press in the mid-1400s, working
    mainly in Mainz, Germany.
Q: Why was the printing press so important?
A: The printing press made books cheaper and faster to produce, spreading knowledge and new ideas
    across Europe.
U: f2 f0 e0
Q: What was the Gutenberg Bible?
A: The Gutenberg Bible was one of the first major books printed in Europe with movable metal type,
    around 1455.
U: f1 f0 e0 t1
Q: Was printing invented before Gutenberg?
A: Yes, printing existed earlier in East Asia, including woodblock printing in China and metal
    movable type in Korea.
U: f0 e1 t1
F: Before printing, books in Europe were usually copied by hand, which could take months for a
    single volume.
F: Gutenberg combined metal type, oil-based ink and a press adapted from the presses used for wine
    and olive oil.
F: By 1500, printing shops were operating in more than two hundred European towns and cities.
E: Martin Luther's writings in the early 1500s spread quickly because printers could turn out
    thousands of copies
E: the oldest surviving dated printed book is the Diamond Sutra from China, printed in the year
    868
T: check when and where a historical source was printed or published, since that helps you judge
    how reliable it is
T: browse digitized library collections online, where many early printed books can be viewed for
    free

# Roman Empire
Q: When did the Roman Empire fall?
A: The Western Roman Empire fell in 476 AD, while the Eastern Roman Empire lasted until 1453.
U: f1 f0 e1
Q: Who was the first Roman emperor?
A: Augustus became the first Roman emperor in 27 BC, after civil wars brought down the Roman
    Republic.
U: f0 e0 t1
Q: What did the Romans leave to the modern world?
A: The Romans left us roads, legal ideas, the Latin roots of many languages, and the basis of our
    calendar.
U: f2 f0 e0 t1
Q: Why did the Western Roman Empire collapse?
A: The Western Roman Empire collapsed from a mix of political instability, economic strain and
    pressure from invading groups.
U: f0 f1 e1 t0
F: At its height in the second century AD, the empire stretched from Britain to the Middle East.
F: The eastern half, often called the Byzantine Empire, was ruled from Constantinople, today's
    Istanbul.
F: Latin developed into Italian, Spanish, French, Portuguese and Romanian, and it lent many words
    to English.
E: the months of July and August are named after Julius Caesar and Augustus, and the Julian
    calendar shaped the one we use today
E: Roman concrete buildings such as the Pantheon in Rome are still standing after nearly two
    thousand years
T: remember that historians still debate why Rome fell, so compare several sources rather than
    trusting one simple explanation
T: look for Latin roots in English words, such as aqua for water, to guess the meaning of
    unfamiliar terms

# Industrial Revolution
Q: What was the Industrial Revolution?
A: The Industrial Revolution was a shift from hand production to machines and factories that began
    in Britain around 1760.
Q: Why did the Industrial Revolution start in Britain?
A: Britain had plentiful coal, money to invest, overseas trade and inventors, which together made
    early factories profitable.
U: f1 f0 e1 t0
Q: How did the steam engine change the world?
A: Steam engines powered factories, trains and ships, freeing industry from relying on water
    wheels, wind and muscle.
U: f1 e0
Q: How did the Industrial Revolution change daily life?
A: The Industrial Revolution moved millions of people from farms into cities, where many worked
    long hours in factories.
U: f2 e1 t1
F: Textile making was one of the first industries transformed, as spinning and weaving machines
    multiplied output.
F: James Watt greatly improved the efficiency of the steam engine in the 1760s and 1770s.
F: Early factory conditions were often harsh, which led to labor laws, trade unions and limits on
    child labor.
E: the Stockton and Darlington Railway, which opened in England in 1825, was the first public
    railway to use steam locomotives
E: Manchester grew from a market town into a crowded industrial city within a few decades, earning
    the nickname Cottonopolis
T: visit an industrial heritage site or museum to see working machines, which makes the era much
    easier to picture
T: read first-hand accounts, such as workers' letters or government reports, to understand how
    people lived through the changes

# Great Wall of China
Q: How long is the Great Wall of China?
A: Including all its branches, the Great Wall measures roughly 21,000 kilometers, according to a
    2012 Chinese survey.
U: f0 f2 e0
Q: Can you see the Great Wall of China from space?
A: No, the Great Wall is very long but far too narrow to see with the naked eye from orbit.
U: f2 e1 t1
Q: Why was the Great Wall of China built?
A: The Great Wall was built to defend Chinese states and empires against raids and invasions from
    the northern steppes.
U: f2 f0 e0 t0
Q: When was the Great Wall of China built?
A: The Great Wall was built in stages over about two thousand years, with its best-known sections
    from the Ming dynasty.
U: f1 f0 e0 t0
F: Early walls date back to around the seventh century BC, and the first emperor, Qin Shi Huang,
    linked several of them.
F: Most of the stone and brick wall that visitors see today was built during the Ming dynasty,
    between 1368 and 1644.
F: The wall also worked as a chain of watchtowers and signal fires for sending warnings across
    long distances.
E: the restored section at Badaling, near Beijing, is one of the most visited parts and can be
    very crowded on holidays
E: astronauts have reported that roads and cities are easier to spot from orbit than the narrow,
    earth-colored wall
T: choose a section such as Mutianyu, which is usually quieter than Badaling, and wear sturdy
    shoes for the steep steps
T: treat popular claims like the space myth with caution and check them against reliable sources

# pyramids of Giza
Q: Who built the pyramids of Giza?
A: The pyramids of Giza were built by skilled Egyptian workers for their pharaohs about 4,500
    years ago.
U: f2 e0 t1
Q: Why did the ancient Egyptians build pyramids?
A: The pyramids were built as tombs for pharaohs, meant to protect their bodies and help them in
    the afterlife.
U: f1 f0 e1 t0
Q: Were the pyramids built by slaves?
A: Evidence suggests the pyramids were built mainly by paid laborers and skilled craftsmen, not by
    slaves.
U: f2 e0 t1
Q: How old is the Great Pyramid?
A: The Great Pyramid was built for the pharaoh Khufu around 2560 BC, which makes it about 4,500
    years old.
U: f0 f1 e1 t0
F: The Great Pyramid was the tallest human-made structure in the world for more than 3,800 years.
F: It contains roughly 2.3 million stone blocks, weighing on average about two and a half tonnes
    each.
F: Archaeologists have found workers' villages, bakeries and tombs near the pyramids, evidence of
    an organized workforce.
E: tombs of pyramid builders found near Giza in the 1990s suggest the workers were respected
    enough to be buried near their kings
E: the pyramids were originally covered in smooth white limestone, which made them gleam in the
    sunlight
T: visit Giza early in the morning, when it is cooler and less crowded
T: look for recent archaeology rather than old legends when reading about how the pyramids were
    built

# Magna Carta
Q: What is the Magna Carta?
A: The Magna Carta is a charter from 1215 that limited the power of the English king.
Q: Why is the Magna Carta important?
A: The Magna Carta established that even a ruler must obey the law, an idea that later inspired
    many constitutions.
U: f2 e0 t1
Q: Who signed the Magna Carta?
A: King John agreed to the Magna Carta in 1215 at Runnymede, under pressure from rebellious
    barons.
U: f0 f1 e1 t1
Q: Is the Magna Carta still law today?
A: Only three clauses of the Magna Carta remain in English law, including one protecting against
    unlawful imprisonment.
U: f2 f1 e1 t0
F: The king sealed the document rather than signing it, as was the custom for royal agreements.
F: The pope annulled the first version within months, but revised versions were reissued in later
    years.
F: Its promise that no free man would be imprisoned without lawful judgment became a foundation of
    due process.
E: the founders of the United States drew on ideas linked to the Magna Carta when writing about
    rights and limits on government
E: four copies of the 1215 charter survive, two in the British Library and one each at Lincoln and
    Salisbury cathedrals
T: read a modern translation of the key clauses, which is short and shows how practical its
    concerns were
T: keep in mind that the charter mainly protected barons at first, and its wider meaning grew over
    the centuries

# Moon landing
Q: When did humans first land on the Moon?
A: Humans first landed on the Moon on July 20, 1969, during NASA's Apollo 11 mission.
U: f0 e0 t1
Q: Who was the first person to walk on the Moon?
A: Neil Armstrong was the first person to walk on the Moon, followed a few minutes later by Buzz
    Aldrin.
U: f0 e0
Q: How many people have walked on the Moon?
A: Twelve astronauts walked on the Moon during six Apollo landings between 1969 and 1972.
U: f2 f1 e1 t0
Q: How long did it take astronauts to reach the Moon?
A: The Moon is about 384,000 kilometers away, and the Apollo crews took around three days to get
    there.
U: f1 e1 t0
F: Michael Collins stayed in orbit aboard the command module while Armstrong and Aldrin explored
    the surface.
F: The Apollo missions brought back about 382 kilograms of lunar rock and soil for scientists to
    study.
F: Apollo 17 in December 1972 was the last time people walked on the Moon.
E: Armstrong famously called his first step a small step for a man and a giant leap for mankind
E: the footprints left by the astronauts are probably still there, since the Moon has no wind or
    rain to erase them
T: explore NASA's free archive of Apollo photos and recordings, which let you follow the missions
    almost minute by minute
T: use binoculars to find the dark Sea of Tranquility on the Moon, the area where Apollo 11 landed

# Renaissance
Q: What was the Renaissance?
A: The Renaissance was a European cultural movement, from roughly the 14th to the 17th century,
    that revived classical learning.
Q: Where did the Renaissance begin?
A: The Renaissance began in Italy, especially in Florence, during the 1300s.
U: f0 f2 e1 t1
Q: Who were some famous Renaissance artists?
A: Famous Renaissance artists include Leonardo da Vinci, Michelangelo, Raphael and Albrecht Durer.
U: f1 e1 t0
Q: Why is it called the Renaissance?
A: Renaissance means rebirth in French, referring to the revival of ancient Greek and Roman ideas.
U: f2 e0 t1
F: Wealthy patrons such as the Medici family in Florence paid for art, buildings and scholarship.
F: Artists developed linear perspective, which made flat paintings look convincingly
    three-dimensional.
F: The printing press helped Renaissance ideas spread quickly from Italy to the rest of Europe.
E: Leonardo's notebooks mix painting studies with designs for flying machines, showing the wide
    curiosity of the era
E: Michelangelo painted the ceiling of the Sistine Chapel between 1508 and 1512, working on
    scaffolding high above the floor
T: look for the vanishing point in a Renaissance painting, where parallel lines meet, to see
    perspective at work
T: book tickets ahead for famous museums like the Uffizi in Florence, which often sell out in busy
    seasons

# Amazon rainforest
Q: Why is the Amazon rainforest important?
A: The Amazon stores vast amounts of carbon, shapes rainfall patterns and is home to an enormous
    variety of life.
Q: How big is the Amazon rainforest?
A: The Amazon rainforest covers about 5.5 million square kilometers, making it the largest
    tropical rainforest on Earth.
U: f2 f0 e0 t1
Q: Which countries does the Amazon rainforest cover?
A: The Amazon spans nine countries and territories, with about 60 percent of it inside Brazil.
U: f2 e0 t1
Q: Is the Amazon the biggest river in the world?
A: The Amazon carries more water than any other river on Earth, though the Nile is usually listed
    as longer.
U: f1 e1 t0
F: Scientists estimate that the Amazon is home to about one in ten of all known species on Earth.
F: The trees release huge amounts of water vapor, which helps create rain across much of South
    America.
F: Clearing for cattle ranching, farming and logging has removed a significant share of the
    forest.
E: a single hectare of Amazon forest can contain more than 200 different kinds of trees
E: the Amazon River pours so much fresh water into the Atlantic that the sea stays less salty far
    offshore
T: look for certification labels on wood, beef and soy products to avoid supporting deforestation
T: choose tours run by local communities when visiting, since they support people who help protect
    the forest

# Sahara Desert
Q: How big is the Sahara Desert?
A: The Sahara covers about nine million square kilometers, roughly the size of the United States
    or China.
U: f1 e1 t1
Q: Is the Sahara the largest desert in the world?
A: The Sahara is the largest hot desert, but Antarctica, a cold desert, is larger overall.
U: f0 f1 e1 t0
Q: Is the Sahara mostly sand dunes?
A: No, sand dunes cover only about a quarter of the Sahara, and most of it is rock, gravel and
    plateaus.
U: f0 e1 t1
Q: Was the Sahara always a desert?
A: No, between about 10,000 and 5,000 years ago the Sahara was much greener, with lakes,
    grasslands and wildlife.
U: f2 e0 t0
F: A desert is defined by low precipitation, usually less than 250 millimeters a year, not by heat
    or sand.
F: Daytime temperatures can pass 40 degrees Celsius, but nights can be cold because dry air loses
    heat quickly.
F: Slow shifts in Earth's orbit changed the monsoon rains over thousands of years, turning the
    green Sahara into desert.
E: rock paintings in the Sahara show giraffes, cattle and people swimming, evidence of a much
    wetter past
E: dust from the Sahara blows across the Atlantic and helps fertilize the Amazon rainforest
T: carry far more water than you think you need in any desert, and plan travel for the cooler
    early morning
T: pack warm layers as well as sun protection when visiting a desert, since nights can be
    surprisingly cold

# Mount Everest
Q: How tall is Mount Everest?
A: Mount Everest stands 8,849 meters above sea level, according to a 2020 survey by China and
    Nepal.
Q: Is Mount Everest the tallest mountain on Earth?
A: Everest has the highest summit above sea level, but Mauna Kea in Hawaii is taller measured from
    its base.
U: f0 e0 t1
Q: Who first climbed Mount Everest?
A: Edmund Hillary and Tenzing Norgay were the first confirmed climbers to reach the summit of
    Everest, in 1953.
U: f2 f0 e1 t0
Q: Why do climbers use bottled oxygen on Everest?
A: At the summit the air pressure is about a third of sea level, so each breath holds far less
    oxygen.
U: f2 e1 t0
F: Everest sits in the Himalayas on the border between Nepal and the Tibet region of China.
F: The Himalayas are still rising slowly because the Indian plate keeps pushing into the Eurasian
    plate.
F: Above about 8,000 meters lies the so-called death zone, where the body cannot cope with the
    thin air for long.
E: Mauna Kea rises about 10,000 meters from the ocean floor, though only about 4,200 meters show
    above sea level
E: climbers usually spend weeks acclimatizing at base camp and higher camps before attempting the
    summit
T: ascend gradually on any high-altitude trek, and go down if you develop a severe headache,
    confusion or breathlessness
T: learn the symptoms of altitude sickness before traveling above about 2,500 meters

# Nile River
Q: What is the longest river in the world?
A: The Nile is usually listed as the longest river, at about 6,650 kilometers, though the Amazon
    is a close rival.
U: f1 f0 e0 t0
Q: Which direction does the Nile flow?
A: The Nile flows north, from East Africa to the Mediterranean Sea in Egypt.
U: f0 e0 t1
Q: Why was the Nile so important to ancient Egypt?
A: The yearly flood of the Nile left fertile soil along its banks, letting Egyptians farm in an
    otherwise dry desert.
U: f2 f0 e1 t1
Q: Where do the two main branches of the Nile meet?
A: The White Nile and the Blue Nile meet at Khartoum, the capital of Sudan.
U: f0 e0 t1
F: The Blue Nile, which starts at Lake Tana in Ethiopia, supplies most of the water and silt
    during the flood season.
F: River lengths are hard to measure because sources, channels and endpoints can be defined in
    different ways.
F: The Aswan High Dam, completed in 1970, ended the annual flood and created the huge Lake Nasser.
E: most Egyptians still live within a few kilometers of the Nile or its delta, which appears as a
    green strip in satellite photos
E: Egyptian farmers once timed their planting by the flood, which arrived each summer and drained
    away in autumn
T: check which measurement a source uses when comparing river lengths, since different studies
    give different numbers
T: open a satellite map of Egypt to see how sharply the green river valley contrasts with the
    desert around it

# time zones
Q: Why do we have time zones?
A: Time zones keep clocks roughly in step with the Sun, so noon falls around the middle of the day
    everywhere.
Q: How many time zones are there?
A: There are 24 standard hourly zones in theory, but with half-hour offsets there are around 38
    local times in use.
U: f2 f0 e0 t0
Q: What is UTC?
A: UTC, or Coordinated Universal Time, is the worldwide reference time from which every time zone
    is measured.
U: f2 e0 t0
Q: Why does China use only one time zone?
A: China uses a single time zone, Beijing Time, for national unity, even though the country spans
    five geographical zones.
U: f0 e1 t1
F: Earth turns 15 degrees of longitude every hour, which is why standard zones are about 15
    degrees wide.
F: Railways in the 1800s pushed for standard time, because every town keeping its own local time
    made schedules confusing.
F: Some places use offsets of 30 or 45 minutes, such as India, which is five and a half hours
    ahead of UTC.
E: when it is noon in London in winter, it is 7 in the morning in New York and 9 in the evening in
    Tokyo
E: in far western China the winter Sun can rise at around 10 in the morning by the official clock
T: schedule international meetings with a world clock tool and write the time with its zone
T: shift your sleep gradually for a few days before long trips across time zones to reduce jet lag

# equator
Q: What is the equator?
A: The equator is an imaginary line around the middle of Earth, halfway between the North and
    South Poles.
Q: Why is it so hot near the equator?
A: Near the equator sunlight strikes the ground almost straight down all year, which concentrates
    its heat.
U: f2 f0 e0 t0
Q: Are day and night equal at the equator?
A: Yes, near the equator day and night each last about 12 hours throughout the year.
U: f2 e0 t1
Q: How long is the equator?
A: The equator is about 40,075 kilometers long, the widest circle around the planet.
U: f1 f0 e1 t0
F: The equator marks zero degrees latitude and divides Earth into the Northern and Southern
    Hemispheres.
F: Because Earth bulges slightly at the equator, a person standing there is farther from the
    planet's center than at the poles.
F: Places on the equator have no real summer or winter, though many have distinct wet and dry
    seasons.
E: Ecuador is named after the equator, which passes just north of its capital, Quito
E: the summit of Chimborazo in Ecuador, close to the equator, is the point on Earth's surface
    farthest from the planet's center
T: use strong sun protection near the equator even on cloudy days, since the UV index is often
    very high
T: expect the sun to set quickly and at nearly the same time all year when traveling near the
    equator

# volcanoes
Q: What is a volcano?
A: A volcano is an opening in Earth's crust where molten rock, gases and ash escape from below.
Q: Why do volcanoes erupt?
A: Volcanoes erupt when pressure from hot magma and its dissolved gases becomes greater than the
    rock above can hold.
Q: What is the difference between magma and lava?
A: Magma is molten rock underground, and it is called lava once it reaches the surface.
U: f1 f2 e0 t1
Q: What is the Ring of Fire?
A: The Ring of Fire is a horseshoe-shaped zone around the Pacific Ocean where many volcanoes and
    earthquakes occur.
U: f0 e1 t1
F: Most volcanoes form near the edges of tectonic plates, where plates pull apart or one slides
    beneath another.
F: Runny magma tends to produce gentle lava flows, while thick, gas-rich magma tends to explode
    violently.
F: Volcanic ash and rock break down into very fertile soils, which is why farms often surround
    volcanoes.
E: Hawaiian volcanoes usually release slow rivers of lava, while Mount Pinatubo in the Philippines
    exploded violently in 1991
E: about three quarters of the world's active volcanoes lie along the Ring of Fire
T: follow official alerts and evacuation orders near an active volcano, and keep masks ready for
    falling ash
T: stay on marked trails in volcanic parks, since ground near vents can be thin, hot or full of
    toxic gas

# earthquakes
Q: What causes earthquakes?
A: Earthquakes happen when stress builds up along faults and the rocks suddenly slip, sending
    vibrations through the ground.
Q: How are earthquakes measured?
A: Earthquakes are recorded by seismometers and rated on the moment magnitude scale, which
    replaced the older Richter scale.
U: f1 f0 e1 t0
Q: What should I do during an earthquake?
A: Drop to the ground, take cover under sturdy furniture, and hold on until the shaking stops.
U: f2 e1 t1
Q: Can scientists predict earthquakes?
A: No, scientists cannot predict the exact time of an earthquake, but they can map which areas
    face higher risk.
U: f0 e1 t0
F: Earth's outer shell is broken into tectonic plates that move a few centimeters a year, about as
    fast as fingernails grow.
F: Each step up on the magnitude scale means about 32 times more energy released.
F: Most earthquake injuries come from falling objects and collapsing buildings rather than from
    the ground movement itself.
E: the San Andreas Fault in California marks where the Pacific plate grinds past the North
    American plate
E: the early warning system in Japan can send alerts seconds before strong shaking arrives, giving
    people time to take cover
T: secure bookcases and heavy furniture to the walls, and keep water, a flashlight and a first aid
    kit ready
T: practice drop, cover and hold on with your household, so everyone reacts quickly when shaking
    starts

# sleep
Q: How much sleep do adults need?
A: Most adults need seven to nine hours of sleep a night to feel and function at their best.
U: f0 f2
Q: Why is sleep important?
A: Sleep lets the body repair itself and helps the brain store memories and keep mood steady.
U: f0 e0 t0
Q: How can I fall asleep faster?
A: Keep a regular schedule, avoid screens and caffeine late in the day, and make your bedroom
    cool, dark and quiet.
U: f2 f1 e1 t0
Q: Is it bad to drink coffee in the afternoon?
A: Afternoon coffee can disturb sleep for many people, because caffeine stays in the body for
    several hours.
U: f1 e1 t1
F: During deep sleep the body releases growth hormone and repairs tissues, while dreaming sleep
    supports learning.
F: Caffeine has a half-life of around five hours, so half of an afternoon coffee may still be
    active at bedtime.
F: Going to bed and waking up at the same times each day helps set your internal body clock.
E: people who sleep only five or six hours a night for a week often do worse on attention tests,
    even when they feel fine
E: a cup of coffee at 4 in the afternoon can still leave noticeable caffeine in your system at 10
    at night
T: set a fixed wake-up time, even on weekends, and get some daylight soon after waking
T: switch to decaf after lunch and keep phones out of the bedroom if you often struggle to sleep

# hydration
Q: How much water should I drink a day?
A: Needs vary with body size, activity and climate, but thirst is a good guide for most healthy
    adults.
Q: How can I tell if I am dehydrated?
A: Common signs of dehydration include thirst, dark yellow urine, headache, tiredness and
    dizziness.
U: f2 f1 e0 t1
Q: Do coffee and tea count toward my daily fluids?
A: Yes, coffee and tea count toward your daily fluids, because their mild diuretic effect is
    small.
U: f1 f0 e1 t0
Q: Why do I need more water when I exercise?
A: Exercise makes you sweat, and you need to replace that water to keep your body cool and working
    well.
U: f2 e0 t1
F: A common reference is about 2.7 liters of total water a day for women and 3.7 liters for men,
    including water from food.
F: Food supplies roughly a fifth of daily water, especially fruits, vegetables and soups.
F: Pale yellow urine usually means you are well hydrated, while dark urine suggests you need more
    fluids.
E: a person hiking on a hot day can lose more than a liter of sweat in an hour
E: watermelon, cucumbers and oranges are mostly water and can help you stay hydrated
T: keep a refillable bottle within reach, and drink more on hot days or when you are active
T: drink water regularly during long workouts, and add salty snacks or a sports drink when you
    sweat for hours

# hand washing
Q: How long should I wash my hands?
A: Wash your hands with soap and water for at least 20 seconds, scrubbing every surface.
U: f1 f0 e0 t0
Q: Why is soap better than water alone?
A: Soap breaks up grease and the fatty outer layer of many germs, so water can rinse them away.
U: f0 e1 t0
Q: When should I wash my hands?
A: Wash your hands before eating or cooking, after using the toilet, and after coughing, sneezing
    or handling rubbish.
U: f2 e1 t0
Q: Is hand sanitizer as good as washing my hands?
A: Sanitizer with at least 60 percent alcohol works well, but soap and water are better for
    visibly dirty hands.
U: f0 f2 e1 t1
F: Soap molecules have one end that is attracted to water and another attracted to oil, so they
    lift grime off the skin.
F: Germs hide under nails, between fingers and on the backs of hands, which are easy places to
    miss.
F: Hand washing is one of the simplest ways to reduce the spread of colds, flu and stomach bugs.
E: humming the Happy Birthday song twice takes about 20 seconds, which makes a handy timer for
    children
E: a cook who washes up after handling raw chicken avoids spreading bacteria to salads and bread
T: dry your hands thoroughly with a clean towel, since damp hands spread germs more easily
T: keep a small bottle of sanitizer in your bag for times when soap and water are not available

# exercise
Q: How much exercise do I need each week?
A: Adults should aim for at least 150 minutes of moderate activity a week, plus muscle
    strengthening twice a week.
Q: Does walking count as exercise?
A: Yes, brisk walking counts as moderate exercise and brings real health benefits.
U: f0 f2 e0 t0
Q: Why is exercise good for you?
A: Regular exercise strengthens the heart, muscles and bones, and lowers the risk of many chronic
    diseases.
U: f1 e1 t0
Q: How do I start exercising if I am out of shape?
A: Start with short, easy sessions like ten-minute walks, then increase the time and effort
    gradually over several weeks.
U: f2 f0 e0 t1
F: Moderate activity means you can talk but not sing, while vigorous activity makes it hard to say
    more than a few words.
F: Exercise also improves mood and sleep, partly by reducing stress hormones and releasing
    endorphins.
F: Even short bouts of activity add up, so three ten-minute walks count as much as one half-hour
    walk.
E: thirty minutes of brisk walking on five days a week meets the basic aerobic guideline
E: climbing stairs, carrying groceries and gardening all count toward your weekly activity
T: pick an activity you enjoy and schedule it like an appointment, so it becomes a habit
T: check with a doctor before starting vigorous exercise if you have heart problems or other
    health conditions

# sunscreen
Q: What SPF sunscreen should I use?
A: Use a broad-spectrum sunscreen with SPF 30 or higher for everyday outdoor protection.
Q: How often should I reapply sunscreen?
A: Reapply sunscreen about every two hours, and right after swimming, heavy sweating or toweling
    off.
Q: Do I need sunscreen on cloudy days?
A: Yes, most ultraviolet rays pass through clouds, so you can still burn on an overcast day.
U: f2 e0 t0
Q: What does broad-spectrum sunscreen mean?
A: Broad-spectrum sunscreen protects against both UVA rays, which age the skin, and UVB rays,
    which cause sunburn.
U: f0 e0 t0
F: SPF 30 blocks about 97 percent of UVB rays, while SPF 50 blocks about 98 percent.
F: Most people apply too little sunscreen, and an adult body needs roughly a shot glass full,
    about 30 milliliters.
F: Ultraviolet radiation is usually strongest between about 10 in the morning and 4 in the
    afternoon.
E: skiers often get badly sunburned because snow reflects much of the sunlight back up at them
E: a day at the beach with one morning application of sunscreen often ends with burned shoulders
    by late afternoon
T: check the daily UV index, and add a hat, sunglasses and shade when it is high
T: apply sunscreen about 15 minutes before going outside, including often-missed spots like the
    ears, neck and feet

# teeth
Q: How long should I brush my teeth?
A: Brush your teeth for about two minutes, twice a day, using a fluoride toothpaste.
Q: Why is fluoride good for teeth?
A: Fluoride strengthens tooth enamel and helps repair early damage, which makes teeth more
    resistant to decay.
U: f1 f0 e0 t1
Q: Do I really need to floss?
A: Yes, floss or small interdental brushes clean between teeth, where a toothbrush cannot reach.
U: f0 e1 t1
Q: How often should I replace my toothbrush?
A: Replace your toothbrush every three to four months, or sooner if the bristles are frayed.
U: f0 e1 t0
F: Plaque is a sticky film of bacteria that turn sugars into acids, and those acids attack the
    enamel.
F: Spitting out toothpaste without rinsing leaves more fluoride on the teeth to keep working.
F: Sugary snacks and drinks sipped throughout the day give bacteria a steady supply of fuel.
E: a soda sipped slowly over an afternoon bathes the teeth in acid for hours, far longer than the
    same drink finished with a meal
E: gums that bleed when you floss are often a sign of inflammation that improves with regular
    cleaning
T: set a two-minute timer or use an electric toothbrush with a built-in timer
T: visit a dentist for regular checkups, since early problems are easier and cheaper to fix

# screen eye strain
Q: How can I reduce eye strain from screens?
A: Follow the 20-20-20 rule, looking at something 20 feet away for 20 seconds every 20 minutes.
Q: Why do my eyes feel dry after using a computer?
A: Eyes often feel dry at screens because people blink much less often while they concentrate.
U: f1 e0 t2
Q: What is the 20-20-20 rule?
A: The 20-20-20 rule means that every 20 minutes you look about six meters away for at least 20
    seconds.
U: f0 e0 t0
Q: How far should my computer screen be from my eyes?
A: Place the screen about an arm's length away, with the top at or slightly below eye level.
U: f2 e1 t0
F: Focusing on something close for long periods keeps the small focusing muscles inside the eye
    working hard.
F: Blink rates can drop sharply when people stare at screens, which lets the surface of the eye
    dry out.
F: Glare from windows or overhead lights makes the eyes work harder to read the screen.
E: a programmer who glances out of a window every so often usually ends the day with less tired
    eyes
E: raising a laptop on a stand and using a separate keyboard lets the screen sit at a better
    height
T: adjust screen brightness to match the room and increase the text size instead of leaning in
T: see an optometrist if the strain continues, since an outdated or missing prescription is a
    common cause
T: blink fully on purpose every so often, and try lubricating eye drops if dryness continues

# dietary fiber
Q: Why is fiber good for you?
A: Fiber keeps digestion regular, helps you feel full and supports healthy blood sugar and
    cholesterol levels.
Q: How much fiber should I eat a day?
A: Most adults should aim for about 25 to 30 grams of fiber a day, more than many people eat.
U: f2 e0 t1
Q: What foods are high in fiber?
A: Beans, lentils, whole grains, vegetables, fruits, nuts and seeds are all good sources of fiber.
U: f0 e0 t1
Q: What is the difference between soluble and insoluble fiber?
A: Soluble fiber dissolves into a gel that can lower cholesterol, while insoluble fiber adds bulk
    and keeps things moving.
U: f0 f1 e1 t0
F: Fiber is the part of plant food that the body cannot digest, so it passes through the gut
    mostly intact.
F: Gut bacteria ferment some fiber, producing substances that help keep the lining of the
    intestine healthy.
F: Adding a lot of fiber suddenly can cause gas and bloating, so it is best to increase it
    gradually.
E: a cup of cooked lentils provides around 15 grams of fiber, roughly half of a daily target
E: swapping white bread for whole-grain bread and adding an apple to lunch can add several grams
    of fiber a day
T: raise your fiber intake slowly over a few weeks and drink plenty of water along with it
T: read nutrition labels and choose breads and cereals with at least three grams of fiber per
    serving

# passwords
Q: How do I create a strong password?
A: Make your password long and unique, for instance a passphrase of four or more random words.
U: f1 f0
Q: Should I use the same password for different websites?
A: No, reusing a password means that one leak can unlock many of your other accounts.
U: f0 e1 t0
Q: What is a password manager?
A: A password manager is an app that creates, stores and fills in strong, unique passwords for all
    your accounts.
U: f2 e1 t1
Q: Is a longer password better than a complex one?
A: Generally yes, since extra length adds far more strength than swapping letters for symbols in a
    short password.
U: f1 f0 e0 t1
F: Attackers use automated tools that try billions of guesses, along with lists of passwords
    leaked from other sites.
F: Each extra character multiplies the number of possible combinations an attacker has to try.
F: A password manager protects everything with one master password, so that one should be long and
    never reused.
E: four unrelated words joined together are easier to remember and harder to crack than a short
    jumble of symbols
E: when a shopping site is breached, criminals often try the leaked email and password on banking
    and email sites
T: start by changing the passwords for your email and bank accounts, since they unlock everything
    else
T: turn on breach alerts in your password manager or browser, and change any password that appears
    in a leak

# two-factor authentication
Q: What is two-factor authentication?
A: Two-factor authentication asks for a second proof of identity, such as a code from your phone,
    after your password.
Q: Why should I turn on two-factor authentication?
A: It blocks most account takeovers, because a stolen password alone is no longer enough to log
    in.
U: f0 e0 t1
Q: Are text message codes safe for two-factor authentication?
A: Text message codes are much better than nothing, but authenticator apps and security keys are
    safer.
U: f2 f1 e1 t0
Q: What happens if I lose the phone I use for two-factor codes?
A: You can get back in with the backup codes you saved during setup, or through the service's
    account recovery.
U: f1 e1 t0
F: The factors combine something you know, like a password, with something you have, like a phone
    or a key.
F: Authenticator apps generate a new six-digit code about every 30 seconds, even without a phone
    signal.
F: Criminals can sometimes hijack phone numbers through SIM swapping, which is why text message
    codes are weaker.
E: if someone in another country steals your email password, they still cannot log in without the
    code on your phone
E: a physical security key plugged into a laptop can defeat phishing sites, because it checks the
    real website address
T: save your backup codes somewhere safe, such as a password manager or a printed copy kept at
    home
T: enable two-factor authentication first on your email, banking and social media accounts

# backups
Q: How should I back up my files?
A: Follow the 3-2-1 rule, keeping three copies on two types of storage, with one copy off-site.
Q: How often should I back up my computer?
A: Back up as often as you would hate to lose the work, which for most people means daily or
    automatically.
U: f2 f0 e1 t0
Q: Why do I need a backup if my files are in the cloud?
A: Cloud sync can copy deletions and mistakes everywhere, so a separate backup protects against
    more kinds of loss.
U: f1 f2 e0 t0
Q: What is ransomware?
A: Ransomware is malicious software that locks or encrypts your files and demands payment to
    release them.
U: f1 f0 e0 t1
F: Hard drives fail, laptops get stolen and ransomware can lock files, so a single copy is never
    truly safe.
F: An off-site or offline copy protects against fire, theft and attacks that spread across
    connected devices.
F: A backup is only useful if it can be restored, so it pays to test recovering a few files now
    and then.
E: a photographer might keep pictures on a laptop, on an external drive at home and with a cloud
    backup service
E: a student whose laptop died the night before a deadline recovered the essay in minutes from an
    automatic backup
T: turn on the built-in backup tool in your operating system and check once a month that it is
    still running
T: keep at least one backup drive disconnected when not in use, so ransomware cannot reach it

# phishing
Q: What is phishing?
A: Phishing is a scam in which criminals pose as trusted companies or people to trick you into
    revealing information.
Q: How can I spot a phishing email?
A: Watch for urgent demands, unexpected attachments, odd sender addresses and links that do not
    match the real website.
U: f1 f2 e1 t0
Q: What should I do if I clicked a phishing link?
A: Change the affected password right away, turn on two-factor authentication and watch your
    accounts for unusual activity.
U: f2 e0 t1
Q: Why do scam emails try to make me hurry?
A: Scammers create urgency so you act quickly without stopping to check whether the message is
    real.
U: f2 f0 e1 t0
F: Phishing messages can arrive by email, text, phone call or social media, and they often copy
    real logos.
F: Hovering over a link on a computer shows its real destination before you click it.
F: Legitimate banks and services rarely ask you to confirm passwords or card numbers through a
    link in a message.
E: a text claiming that a parcel is held until you pay a small fee is a common phishing trick
E: an email warning that your account will close within 24 hours unless you log in now is a
    classic warning sign
T: go to the website yourself by typing its address or using a bookmark, instead of clicking links
    in messages
T: report suspicious messages to your email provider or workplace IT team, then delete them

# RAM and storage
Q: What is the difference between RAM and storage?
A: RAM is fast, temporary memory for work in progress, while storage keeps your files even when
    the power is off.
Q: Why does my computer slow down with many tabs open?
A: Each open tab uses memory, and when RAM runs out the computer has to swap data to much slower
    storage.
U: f0 e1 t0
Q: How much RAM do I need?
A: For everyday browsing and office work, 8 to 16 gigabytes of RAM is usually enough today.
U: f1 e1 t0
Q: What is an SSD?
A: An SSD, or solid-state drive, stores data on flash memory chips with no moving parts, which
    makes it fast.
U: f2 f1 e0 t1
F: RAM is much faster than an SSD or a hard drive, but its contents are wiped whenever the
    computer shuts down.
F: Storage is measured in hundreds of gigabytes or in terabytes, while RAM is usually much
    smaller.
F: Upgrading from a spinning hard drive to an SSD is often the biggest speed boost an older
    computer can get.
E: a document you are editing lives in RAM, and clicking save writes it to the storage drive
E: video editing and large games often need 32 gigabytes of RAM or more to run smoothly
T: close programs and tabs you are not using, and check your system monitor to see what uses the
    most memory
T: look for a computer with an SSD rather than a hard drive, even if the storage size is smaller

# algorithms
Q: What is an algorithm?
A: An algorithm is a precise, step-by-step set of instructions for solving a problem or completing
    a task.
Q: Why do some algorithms run faster than others?
A: Some algorithms need far fewer steps as the input grows, so they stay fast on large amounts of
    data.
U: f1 e0 t1
Q: What is binary search?
A: Binary search finds an item in a sorted list by checking the middle and discarding half the
    list each time.
U: f1 e0 t1
Q: Can you explain algorithms with an everyday example?
A: A recipe is an everyday algorithm, listing exact steps that turn ingredients into a finished
    dish.
U: f0 f2 e1 t0
F: Computers follow algorithms exactly, so every step must be clear and leave nothing to
    guesswork.
F: Computer scientists describe speed by how the number of steps grows as the input gets larger.
F: Searching, sorting and finding routes on a map are classic problems solved by well-known
    algorithms.
E: binary search can find a name in a sorted list of a million entries with only about 20 checks
E: a navigation app uses a route-finding algorithm to compare many possible roads and pick the
    quickest
T: write the steps of a task in plain language before coding it, which often reveals gaps in your
    plan
T: test an algorithm on small examples by hand first, including edge cases like an empty list

# cloud storage
Q: What is the cloud?
A: The cloud means using computers in remote data centers, over the internet, to store files or
    run services.
Q: Is it safe to store my files in the cloud?
A: Reputable cloud services are generally secure, but your account is only as safe as your
    password and settings.
U: f0 f1 e1 t0
Q: What are the benefits of cloud storage?
A: Cloud storage lets you reach files from any device, share them easily and keep copies safe from
    local accidents.
U: f2 f1 e1 t1
Q: Do I still own the files I upload to the cloud?
A: You usually keep ownership of uploaded files, but the provider's terms decide how they may be
    stored or scanned.
U: f0 e0 t1
F: Cloud providers run huge data centers full of servers, and they usually keep copies of data in
    more than one place.
F: Cloud services depend on an internet connection, so offline copies are still useful for
    important files.
F: Many apps you already use, like web email and photo sync, are cloud services.
E: photos taken on a phone can upload automatically and then appear on a laptop a few minutes
    later
E: a team can edit the same shared document at once because the file lives on a cloud server
T: protect cloud accounts with a strong, unique password and two-factor authentication
T: review the sharing settings on cloud folders now and then, and remove links you no longer need

# Wi-Fi
Q: How does Wi-Fi work?
A: Wi-Fi uses radio waves to send data between your devices and a router connected to the
    internet.
Q: Why is my Wi-Fi slow in some rooms?
A: Walls, floors, distance and interference from other devices weaken a Wi-Fi signal as it travels
    from the router.
U: f1 f2 e0 t0
Q: What is the difference between 2.4 GHz and 5 GHz Wi-Fi?
A: The 2.4 GHz band reaches farther through walls, while the 5 GHz band is faster but covers a
    shorter range.
U: f2 f1 e1 t1
Q: Where should I put my Wi-Fi router?
A: Place the router in a central, open spot, raised off the floor and away from thick walls.
U: f1 e0 t1
F: Wi-Fi signals are radio waves, like those used by radios and phones, but at higher frequencies.
F: Thick walls, metal, mirrors and large fish tanks absorb or reflect the signal.
F: Microwave ovens and some cordless phones use the 2.4 GHz band and can interfere with Wi-Fi.
E: a router hidden in a cupboard at one end of a house often leaves the far bedroom with a weak
    signal
E: mesh systems place several small units around a home so that every room gets a strong signal
T: restart your router occasionally and keep its firmware updated for better speed and security
T: use a strong Wi-Fi password with WPA2 or WPA3 security so neighbors cannot use your connection

# browser cookies
Q: What are browser cookies?
A: Cookies are small files that websites save in your browser to remember logins, settings and
    shopping carts.
Q: Why do websites ask me to accept cookies?
A: Websites ask because privacy laws in many places require consent for cookies that are not
    strictly necessary.
U: f1 f0 e1 t0
Q: Should I clear my cookies?
A: Clearing cookies can protect your privacy and fix some site problems, but it will log you out
    of websites.
U: f1 e0 t1
Q: What are third-party cookies?
A: Third-party cookies are set by outside companies, often advertisers, to follow you across
    different websites.
U: f2 f0 e1 t1
F: First-party cookies come from the site you are visiting and usually help it work smoothly.
F: Cookies cannot run programs or carry viruses, but they can reveal a lot about your browsing
    habits.
F: Many browsers now block some third-party tracking cookies by default.
E: a shopping cart that still holds your items when you return the next day relies on a cookie
E: seeing ads for the same shoes on many sites after viewing them once is often the work of
    tracking cookies
T: choose the reject or necessary-only option on cookie banners when you do not want to be tracked
T: use the privacy settings in your browser to block third-party cookies while keeping useful ones

# software updates
Q: Why should I install software updates?
A: Updates fix security holes and bugs, so installing them promptly protects your device from
    known attacks.
Q: Is it safe to delay software updates?
A: Delaying for a few days is usually fine, but long delays leave known security flaws open to
    attackers.
U: f0 e0 t1
Q: Why does my phone need so many updates?
A: Phones get frequent updates because new security problems are found constantly and apps keep
    adding features.
U: f2 f1 e1 t0
Q: What is a security patch?
A: A security patch is an update that closes a specific weakness attackers could use to break into
    software.
U: f0 e1 t0
F: Once a flaw is announced publicly, attackers often race to exploit it on devices that have not
    been updated.
F: Older devices eventually stop receiving updates, which makes them riskier to use online.
F: Updates can also improve battery life, performance and compatibility with new apps.
E: the WannaCry ransomware outbreak in 2017 spread mainly through computers that had not installed
    an available patch
E: a web browser update often closes holes that malicious websites could otherwise use
T: turn on automatic updates for your operating system, browser and apps
T: back up important files before major updates, and schedule them for a time when you do not need
    the device

# compound interest
Q: What is compound interest?
A: Compound interest is interest earned both on your original money and on the interest it has
    already earned.
Q: Why should I start saving early?
A: Starting early gives compound interest more years to work, so small amounts can grow much
    larger.
U: f0 f2 e1 t0
Q: What is the rule of 72?
A: The rule of 72 estimates how many years money takes to double, by dividing 72 by the annual
    interest rate.
U: f1 f2 e0 t0
Q: Does compound interest work against me when I have debt?
A: Yes, unpaid credit card balances compound too, so debt can grow quickly if you only make
    minimum payments.
U: f1 e2 t1
F: With simple interest you earn only on the original amount, while compounding makes growth speed
    up over time.
F: The more often interest is added, such as monthly instead of yearly, the faster the balance
    grows.
F: Investment returns are never guaranteed, but the same compounding math applies to gains that
    are reinvested.
E: 1,000 dollars earning 7 percent a year roughly doubles in about ten years and quadruples in
    about twenty
E: someone who starts saving at 25 can retire with far more than someone who saves the same
    monthly amount from 35
E: a 2,000 dollar card balance at 20 percent interest can grow to about 2,400 dollars in a year if
    nothing is paid
T: set up an automatic monthly transfer into savings or investments, so compounding happens
    without effort
T: pay off high-interest debt first, since its compounding usually costs more than your savings
    earn

# emergency fund
Q: What is an emergency fund?
A: An emergency fund is money set aside for unexpected costs like job loss, medical bills or
    urgent repairs.
Q: How much should I keep in an emergency fund?
A: A common goal is to keep three to six months of essential living expenses in an emergency fund.
U: f1 f0 e1 t0
Q: Where should I keep my emergency fund?
A: Keep it in a safe, easily accessible savings account, separate from the account you use for
    daily spending.
U: f2 e0 t1
Q: Should I build an emergency fund or pay off debt first?
A: Many advisers suggest a small starter fund first, then paying down high-interest debt, then
    building the full fund.
U: f0 e0 t0
F: Without a cushion, surprise expenses often end up on credit cards with high interest rates.
F: People with irregular income or a single household income may want a larger fund.
F: An emergency fund is not an investment, so safety and quick access matter more than high
    returns.
E: a car repair costing several hundred dollars becomes an inconvenience instead of a crisis when
    savings cover it
E: someone with 2,000 dollars of essential monthly costs might aim for 6,000 to 12,000 dollars in
    the fund
T: start with a small target, such as one month of expenses, and automate a transfer every payday
T: refill the fund as soon as you can after using it, so it is ready for the next surprise

# budgeting
Q: How do I make a budget?
A: List your monthly income, track your spending by category and set limits that leave room for
    saving.
Q: What is the 50/30/20 budgeting rule?
A: The 50/30/20 rule splits after-tax income into 50 percent for needs, 30 percent for wants and
    20 percent for savings.
U: f0 f2 e0 t1
Q: Why should I track my spending?
A: Tracking your spending shows where your money really goes, which often reveals easy places to
    cut back.
U: f1 e1 t0
Q: How do I stick to a budget?
A: Automate savings and bills, review spending weekly, and allow a little money for fun so the
    plan feels livable.
U: f2 f1 e1 t1
F: Needs include rent, groceries, utilities and minimum debt payments, while wants cover things
    like eating out and hobbies.
F: Small recurring costs, like unused subscriptions, often add up to more than people expect.
F: A budget is a plan rather than a verdict, so it is normal to adjust the numbers after the first
    few months.
E: someone taking home 3,000 dollars a month could plan 1,500 for needs, 900 for wants and 600 for
    savings
E: going through a month of bank statements often turns up forgotten subscriptions worth canceling
T: use a simple spreadsheet or budgeting app and check it for a few minutes each week
T: pay yourself first by moving money into savings on payday, before spending on anything else

# inflation
Q: What is inflation?
A: Inflation is the general rise in prices over time, which means each unit of money buys less.
Q: What causes inflation?
A: Inflation can come from demand outpacing supply, rising production costs, or too much money
    chasing too few goods.
U: f1 f2 e1 t1
Q: Why do central banks aim for about two percent inflation?
A: Central banks aim for low, steady inflation of around two percent to support growth while
    avoiding harmful falling prices.
U: f1 e1 t1
Q: How does inflation affect my savings?
A: If your savings earn less interest than the inflation rate, their real buying power shrinks
    over time.
U: f0 e0 t0
F: Inflation is usually measured with a consumer price index, which tracks the cost of a typical
    basket of goods and services.
F: Central banks often raise interest rates to slow inflation and lower them to support a weak
    economy.
F: Very high inflation, called hyperinflation, can wipe out savings and destabilize an entire
    economy.
E: at three percent inflation, something that costs 100 dollars today would cost about 134 dollars
    in ten years
E: Germany in 1923 suffered hyperinflation so severe that prices doubled every few days
T: compare savings interest rates with the current inflation rate when deciding where to keep your
    money
T: review your budget each year, since rising prices can quietly stretch the same income

# credit scores
Q: What is a credit score?
A: A credit score is a number that estimates how likely you are to repay borrowed money on time.
Q: How can I improve my credit score?
A: Pay every bill on time, keep credit card balances low, and avoid opening many new accounts at
    once.
U: f1 f0 e1 t0
Q: Why does my credit score matter?
A: Your credit score affects whether you can borrow and how much interest you pay on loans and
    cards.
U: f2 f0 e0 t1
Q: Does checking my own credit score lower it?
A: No, checking your own credit score counts as a soft inquiry and does not affect it.
U: f3 e0 t1
F: Payment history is usually the biggest factor, followed by how much of your available credit
    you use.
F: Using less than about 30 percent of your credit limits is a common guideline for a healthy
    score.
F: Late payments and defaults can stay on a credit report for several years, though their impact
    fades.
F: Hard inquiries, made when a lender reviews your file for a new loan or card, can lower a score
    slightly for a while.
E: a borrower with a strong score may get a mortgage rate a full percentage point lower, saving
    thousands over the loan
E: someone with a 1,000 dollar card limit who keeps the balance under 300 dollars shows low use of
    available credit
T: set up automatic minimum payments so you never miss a due date by accident
T: review your credit report at least once a year and dispute any errors you find

# index funds and diversification
Q: What is an index fund?
A: An index fund is an investment fund that tracks a market index by holding the same securities
    it contains.
Q: Why is diversification important in investing?
A: Diversification spreads money across many investments, so a loss in one has less effect on the
    whole.
U: f2 e1 t0
Q: Why do many people recommend index funds?
A: Index funds offer broad diversification at low cost, and over long periods they beat most
    actively managed funds.
U: f1 f0 e0 t1
Q: Is investing in stocks risky?
A: Yes, stock prices can fall sharply in the short term, though diversified holdings have
    historically grown over decades.
U: f2 e1 t0
F: An index like the S&P 500 follows about 500 large companies listed in the United States.
F: Fees matter because they are charged every year, and small differences compound over decades.
F: Past performance does not guarantee future results, and any investment can lose value.
E: a fund charging 1 percent a year instead of 0.1 percent can cost tens of thousands of dollars
    over a long working life
E: an investor holding shares in only one company can lose heavily if it fails, while an index
    fund barely notices
T: match investments to your timeline, and keep money you need within a few years in safer places
T: invest regularly in a low-cost, broadly diversified fund rather than trying to time the market

# its and it's
Q: What is the difference between its and it's?
A: The word it's is short for it is or it has, while its shows possession, like his or her.
Q: How do I remember when to use it's?
A: Use it's only if you can replace it with it is or it has and the sentence still makes sense.
U: f1 e1 t0
Q: Why doesn't the possessive its have an apostrophe?
A: Possessive its follows the pattern of his, hers and ours, which also have no apostrophe.
U: f0 e0 t1
Q: Is its' with an apostrophe at the end ever correct?
A: No, its' is never correct in English, and the only two forms are its and it's.
U: f2 f1 e1 t1
F: The apostrophe in it's marks missing letters, just as it does in don't or can't.
F: Mixing up the two is one of the most common spelling errors, even among confident writers.
F: Spell checkers often miss this mistake because both forms are real words.
E: in 'the dog wagged its tail' the word is possessive, while in 'it's raining' it means it is
E: 'the cat lost its collar and it's hiding under the bed' uses both forms correctly
T: read the sentence aloud with it is in place of the word you wrote, and check that it still
    works
T: search your finished document for every it's and test each one before sending it

# affect and effect
Q: What is the difference between affect and effect?
A: Affect is usually a verb meaning to influence, and effect is usually a noun meaning a result.
Q: How can I remember affect versus effect?
A: Remember that affect is an action and effect is an end result, matching their first letters.
U: f2 f1 e0 t0
Q: Can effect ever be used as a verb?
A: Yes, effect as a verb means to bring about, as in effecting change.
U: f1 e1 t1
Q: Should I write 'the weather affected my mood' or 'effected my mood'?
A: The correct phrase is 'the weather affected my mood', because the verb meaning to influence is
    affect.
U: f1 e0 t0
F: Affect can also be a noun in psychology, where it means the outward display of emotion.
F: Effect as a verb is formal and fairly rare, so in everyday writing the verb you want is almost
    always affect.
F: The two words sound alike in casual speech, which is why they are so easy to confuse.
E: in 'the medicine had a strong effect' the noun effect names a result, while in 'the medicine
    affected her sleep' the verb affected means influenced
E: a manager who effects change makes it happen, while one who affects change only influences it
T: try swapping in the word influence, and if it fits, you probably want affect
T: check whether a word like the or an comes right before it, which usually signals the noun
    effect

# spaced repetition and language learning
Q: What is the best way to memorize vocabulary in a new language?
A: Spaced repetition, reviewing words just before you would forget them, is one of the most
    effective methods.
Q: What is spaced repetition?
A: Spaced repetition is a study method that reviews material at gradually increasing intervals to
    build long-term memory.
U: f0 f1 e0 t1
Q: How long does it take to learn a new language?
A: It depends on the language and practice time, but everyday fluency usually takes hundreds to
    thousands of hours.
U: f2 e1 t0
Q: Is it better to study a language a little every day?
A: Yes, short daily practice usually beats occasional long sessions, because regular review builds
    lasting memory.
U: f0 f1 e0 t0
F: Memory fades quickly after you first learn something, a pattern known as the forgetting curve.
F: Each successful review makes a memory more durable, so the next review can wait longer.
F: Using new words in speaking or writing helps them stick far better than only recognizing them
    on a card.
E: a flashcard app might show a new word again after one day, then after three days, a week and a
    month
E: English speakers usually learn Spanish or French faster than Japanese or Arabic, which differ
    more from English
T: spend 15 to 20 minutes a day on flashcards and add a few minutes of listening or speaking
    practice
T: learn words in short phrases or example sentences instead of isolated lists

# active and passive voice
Q: What is the difference between active and passive voice?
A: In active voice the subject does the action, while in passive voice the subject receives it.
Q: Why do writing guides recommend the active voice?
A: Active voice is usually shorter and clearer, because it says directly who did what.
U: f0 f2 e1 t1
Q: When is the passive voice a good choice?
A: Passive voice works well when the actor is unknown or unimportant, or when you want to focus on
    the result.
U: f1 f2 e1 t1
Q: How do I recognize the passive voice?
A: Look for a form of the verb to be followed by a past participle, like was written or is made.
U: f2 e0 t0
F: Passive sentences often hide who performed the action, which can make writing vague.
F: Scientific and legal writing uses the passive more often because the action matters more than
    the actor.
F: Neither voice is grammatically wrong, so the choice is really about clarity and emphasis.
E: 'the chef cooked the meal' is active, while 'the meal was cooked by the chef' is passive
E: 'mistakes were made' is a well-known passive phrase that avoids saying who made them
T: try adding by zombies after the verb, and if the sentence still makes sense, it is probably
    passive
T: rewrite a passive sentence by moving the actor to the front, then keep whichever version reads
    more clearly

# fewer and less
Q: What is the difference between fewer and less?
A: Use fewer for things you can count one by one, and less for amounts you cannot count
    individually.
Q: Is it 'ten items or less' or 'ten items or fewer'?
A: Strictly it is 'ten items or fewer', because items can be counted, though 'or less' is common
    on signs.
U: f2 f0 e0 t1
Q: Why do people say less when they mean fewer?
A: Less has been used with countable nouns in casual speech for centuries, so many people find it
    natural.
U: f2 e1 t1
Q: Can I say 'less people'?
A: In formal writing say 'fewer people', since people can be counted individually.
U: f0 f2 e0 t0
F: Countable nouns have plural forms, like apples, people and cars, while mass nouns, like water
    and time, usually do not.
F: Less is standard with amounts of time, money and distance even when they include numbers, as in
    less than five miles.
F: Many style guides treat fewer as the preferred choice with countable nouns in formal writing.
E: you drink less water but eat fewer apples, and you have less time but fewer minutes
E: 'less than 20 dollars' is correct because it treats money as an amount, not as separate coins
T: ask yourself whether you could count the items one by one, and if so, choose fewer
T: use fewer in formal writing with plural nouns, and relax about casual speech where less is
    common
"""


if __name__ == "__main__":
    sys.exit(main())
