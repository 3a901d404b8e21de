#!/usr/bin/env python
"""Build the WordNet-derived data sets that ship in data/ (see data/README.md for what each field means).

    python scripts/build_wordnet_data.py [--wordnet /usr/share/wordnet] [--out data]

Reads the WordNet 3.0 database files directly (Debian package `wordnet-base`), so it needs only the standard
library and numpy. The output is deterministic (sorted inputs, fixed seed): running it again reproduces the
committed files byte for byte, which tests/test_tasks.py checks.

- wordnet_topics.jsonl: example sentences labelled by the supersense (lexicographer file) of their synset, with
  the illustrated noun (its lemma and character span) where the sentence contains it.
- wordnet_wic.jsonl: Word-in-Context pairs: two example sentences sharing a word form; label 1 when both
  examples belong to the same synset of that word, 0 when they come from two different synsets.
- wordnet_senses.jsonl: the sense inventory of every target lemma of the two files above (gloss, examples and
  lexicographer file of each sense), for notebook 07.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 0
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}  # index/data file suffix per part of speech
POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}  # "s" = adjective satellite
# the lexicographer files by number (WordNet 3.0's `lexnames` file, which Debian does not ship; see lexnames(5WN))
LEXNAMES = dict(enumerate([
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl"]))
# Topic classes: the distinct noun supersenses that have ~300 or more example sentences. (noun.food, noun.animal
# and noun.plant would separate more cleanly but have only 89, 52 and 23 examples in WordNet.)
TOPIC_CLASSES = ["noun.artifact", "noun.communication", "noun.location", "noun.person", "noun.time"]
TOPIC_PER_CLASS = 300
WIC_PAIRS_PER_LEMMA = 2  # at most this many same-sense and as many different-sense pairs per (lemma, pos)
# pairs kept per part of speech: the most frequent target lemmas (SemCor counts, cntlist.rev) first
WIC_PAIRS_PER_POS = {"n": 400, "v": 400, "a": 400, "r": 200}
MIN_WORDS = 3  # drop fragments such as "a glass of" or "alcohol abuse"
# WordNet's morphological detachment rules (morph.c); exceptions come from the *.exc files
MORPH_RULES = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
          ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
# a whole word: a run of letters not glued to other letters or to a hyphen (so "well" is not found in "well-known")
WORD_RE = re.compile(r"(?<![A-Za-z-])[A-Za-z]+(?![A-Za-z-])")
LEMMA_RE = re.compile(r"^[a-z]+$")  # single, plain words only as WiC targets


@dataclass
class Synset:
    """One line of a WordNet data file, reduced to what the two data sets need."""

    offset: str
    pos: str  # data-file letter: n v a s r
    lexname: str
    lemmas: list[str]  # lower case, adjective markers such as "(p)" removed
    gloss: str  # the definition, without the examples
    examples: list[str]
    name: str = ""  # NLTK-style name, e.g. "bank.n.01"


def read_synsets(wordnet: Path, pos: str) -> list[Synset]:
    """Parse data.<pos>: one synset per line after the licence header (lines starting with two spaces)."""
    synsets = []
    for line in (wordnet / f"data.{POS_FILES[pos]}").read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        n_words = int(fields[3], 16)
        lemmas = [re.sub(r"\(.*\)$", "", w).lower() for w in fields[4:4 + 2 * n_words:2]]
        # examples are the double-quoted parts of the gloss; the definition is what precedes the first quote
        examples = [e.strip() for e in re.findall(r'"([^"]*)"', gloss) if e.strip()]
        definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
        synsets.append(Synset(fields[0], fields[2], LEXNAMES.get(int(fields[1]), fields[1]), lemmas, definition,
                              examples))
    return synsets


def read_index(wordnet: Path, pos: str) -> dict[str, list[str]]:
    """Parse index.<pos>: lemma -> synset offsets in WordNet's sense order (most frequent sense first)."""
    index = {}
    for line in (wordnet / f"index.{POS_FILES[pos]}").read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        n_synsets = int(fields[2])
        index[fields[0]] = fields[len(fields) - n_synsets:]
    return index


def read_exceptions(wordnet: Path, pos: str) -> dict[str, set[str]]:
    """Parse <pos>.exc: irregular inflected form -> base forms (e.g. "ran" -> {"run"})."""
    exc: dict[str, set[str]] = defaultdict(set)
    for line in (wordnet / f"{POS_FILES[pos]}.exc").read_text(encoding="utf-8").splitlines():
        form, *bases = line.split()
        exc[form].update(bases)
    return exc


def read_frequencies(wordnet: Path) -> Counter:
    """SemCor tag counts per (lemma, pos letter) summed over senses, from cntlist.rev (sense_key sense_no count)."""
    freq: Counter = Counter()
    for line in (wordnet / "cntlist.rev").read_text(encoding="utf-8").splitlines():
        key, _, count = line.split()
        lemma, _, rest = key.partition("%")
        freq[lemma, "nvara"[int(rest[0]) - 1]] += int(count)  # ss_type digit 1-5: n v a r s, satellites count as a
    return freq


def base_forms(token: str, pos: str, exc: dict[str, set[str]]) -> set[str]:
    """Candidate lemmas of a lower-case token, as WordNet's morphy proposes them (unchecked against the index)."""
    forms = {token} | exc.get(token, set())
    forms |= {token[: -len(suf)] + rep for suf, rep in MORPH_RULES[pos]
              if token.endswith(suf) and len(token) > len(suf)}
    return forms


def build_topics(synsets: list[Synset], rng: np.random.Generator) -> list[dict]:
    """Sample TOPIC_PER_CLASS example sentences per supersense, dropping sentences found under two supersenses."""
    by_text: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for s in synsets:
        if s.lexname in TOPIC_CLASSES:
            for text in s.examples:
                if len(text.split()) >= MIN_WORDS:
                    by_text[text].add((s.lexname, s.name))
    per_class: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for text, owners in sorted(by_text.items()):
        if len({lex for lex, _ in owners}) == 1:  # ambiguous sentences would be label noise
            lexname, name = min(owners)
            per_class[lexname].append((text, name))
    rows = []
    for lexname in TOPIC_CLASSES:
        items = per_class[lexname]
        keep = sorted(rng.choice(len(items), size=min(TOPIC_PER_CLASS, len(items)), replace=False))
        rows += [{"text": items[i][0], "label": lexname, "synset": items[i][1]} for i in keep]
    return rows


def build_wic(synsets_by_pos: dict[str, list[Synset]], indexes: dict[str, dict[str, list[str]]],
              wordnet: Path, rng: np.random.Generator) -> list[dict]:
    """Pair example sentences of a lemma that share a surface form: label 1 for one synset, 0 for two synsets.

    Each target lemma gives as many same-sense as different-sense pairs (so the word alone predicts nothing);
    per part of speech the most frequent lemmas are taken until WIC_PAIRS_PER_POS is reached.
    """
    freq = read_frequencies(wordnet)
    rows = []
    seen: set[frozenset[str]] = set()  # a pair of sentences is used once, even when two lemmas share a form
    for pos in POS_FILES:
        exc = read_exceptions(wordnet, pos)
        by_offset = {s.offset: s for s in synsets_by_pos[pos]}
        lemmas = sorted((lemma for lemma, offs in indexes[pos].items() if LEMMA_RE.match(lemma) and len(offs) > 1),
                        key=lambda lemma: (-freq[lemma, pos], lemma))
        kept = []
        for lemma in lemmas:
            if len(kept) >= WIC_PAIRS_PER_POS[pos]:
                break
            # (synset, example, surface form, char span) for each example that contains the lemma as a whole word
            hits = []
            for s in (by_offset[off] for off in indexes[pos][lemma]):
                for text in (t for t in s.examples if len(t.split()) >= MIN_WORDS):
                    match = next((m for m in WORD_RE.finditer(text)
                                  if lemma in base_forms(m.group().lower(), pos, exc)), None)
                    if match:  # the first occurrence marks the target
                        hits.append((s, text, match.group().lower(), match.span()))
            # a sentence listed under two senses of the lemma has no single answer: leave it out
            owners = Counter(h[1] for h in hits)
            hits = [h for h in hits if owners[h[1]] == 1]
            same, diff = [], []
            for a, b in itertools.combinations(hits, 2):
                if a[2] == b[2] and a[1] != b[1] and frozenset((a[1], b[1])) not in seen:  # same form, 2 sentences
                    (same if a[0] is b[0] else diff).append((a, b))
            k = min(len(same), len(diff), WIC_PAIRS_PER_LEMMA)
            for label, pairs in ((1, same), (0, diff)):
                for i in sorted(rng.choice(len(pairs), size=k, replace=False)) if k else []:
                    a, b = pairs[i]
                    seen.add(frozenset((a[1], b[1])))
                    kept.append({
                        "word": a[2], "lemma": lemma, "pos": POS_NAMES[pos], "label": label,
                        "context_1": a[1], "context_2": b[1], "span_1": list(a[3]), "span_2": list(b[3]),
                        "synset_1": a[0].name, "synset_2": b[0].name, "gloss_1": a[0].gloss, "gloss_2": b[0].gloss,
                    })
        rows += sorted(kept, key=lambda r: (r["lemma"], -r["label"], r["context_1"], r["context_2"]))
    return rows


def find_target(text: str, synset: Synset, exc: dict[str, set[str]]) -> tuple[str, tuple[int, int]] | None:
    """(lemma, character span) of the noun a topic sentence illustrates: the synset's first lemma, in WordNet's
    order, found in the sentence as whole words (the last word may be inflected: "camps" for *camp*,
    "political prisoners" for *political_prisoner*); the first occurrence of that lemma marks the target."""
    for lemma in synset.lemmas:
        *head, last = lemma.split("_")
        if not all(re.fullmatch(r"[a-z]+", w, flags=re.IGNORECASE) for w in (*head, last)):
            continue  # hyphens, apostrophes, dots: not matched
        prefix = "".join(rf"{re.escape(w)}\s+" for w in head)
        for match in re.finditer(rf"(?<![A-Za-z-]){prefix}([A-Za-z]+)(?![A-Za-z-])", text, flags=re.IGNORECASE):
            if last in base_forms(match.group(1).lower(), "n", exc):
                return lemma, match.span()
    return None


def add_targets(rows: list[dict], by_name: dict[str, Synset], exc: dict[str, set[str]]) -> None:
    """Give each topic row its target noun: `lemma`, `word` (as written) and `span` ([start, end) in `text`), or
    None in all three when no lemma of the synset is found in the sentence as plain words."""
    for row in rows:
        found = find_target(row["text"], by_name[row["synset"]], exc)
        lemma, span = found if found else (None, None)
        row.update(lemma=lemma, word=row["text"][span[0]:span[1]] if span else None,
                   span=list(span) if span else None)


def build_senses(topics: list[dict], wic: list[dict], synsets_by_pos: dict[str, list[Synset]],
                 indexes: dict[str, dict[str, list[str]]]) -> list[dict]:
    """The sense inventory of every target lemma (topic nouns, WiC lemmas in their part of speech): each sense's
    synset, lexicographer file, gloss and example sentences, in WordNet's sense order (most frequent first)."""
    letter = {name: pos for pos, name in POS_FILES.items()}
    wanted = {(r["lemma"], "n") for r in topics if r["lemma"]} | {(r["lemma"], letter[r["pos"]]) for r in wic}
    by_offset = {pos: {s.offset: s for s in synsets} for pos, synsets in synsets_by_pos.items()}
    rows = []
    for lemma, pos in sorted(wanted):
        senses = [by_offset[pos][off] for off in indexes[pos][lemma]]
        rows.append({"lemma": lemma, "pos": POS_FILES[pos], "senses": [
            {"synset": s.name, "lexname": s.lexname, "gloss": s.gloss, "examples": s.examples} for s in senses]})
    return rows


def name_synsets(synsets_by_pos: dict[str, list[Synset]], indexes: dict[str, dict[str, list[str]]]) -> None:
    """Give every synset its NLTK name (first lemma, pos letter, rank of the synset among that lemma's senses)."""
    for pos, synsets in synsets_by_pos.items():
        for s in synsets:
            s.name = f"{s.lemmas[0]}.{s.pos}.{indexes[pos][s.lemmas[0]].index(s.offset) + 1:02d}"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write one JSON object per line, atomically (a temporary file beside the target, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0 dict folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data")
    args = parser.parse_args()

    synsets_by_pos = {pos: read_synsets(args.wordnet, pos) for pos in POS_FILES}
    indexes = {pos: read_index(args.wordnet, pos) for pos in POS_FILES}
    name_synsets(synsets_by_pos, indexes)

    topics = build_topics(synsets_by_pos["n"], np.random.default_rng(SEED))
    add_targets(topics, {s.name: s for s in synsets_by_pos["n"]}, read_exceptions(args.wordnet, "n"))
    wic = build_wic(synsets_by_pos, indexes, args.wordnet, np.random.default_rng(SEED))
    senses = build_senses(topics, wic, synsets_by_pos, indexes)
    write_jsonl(args.out / "wordnet_topics.jsonl", topics)
    write_jsonl(args.out / "wordnet_wic.jsonl", wic)
    write_jsonl(args.out / "wordnet_senses.jsonl", senses)

    print(f"wordnet_topics.jsonl: {len(topics)} sentences", dict(sorted(Counter(r["label"] for r in topics).items())))
    print(f"wordnet_wic.jsonl: {len(wic)} pairs, {len({(r['lemma'], r['pos']) for r in wic})} target lemmas")
    print(f"  topic sentences with a target noun: {sum(r['span'] is not None for r in topics)}")
    print(f"wordnet_senses.jsonl: {len(senses)} lemmas, {sum(len(r['senses']) for r in senses)} senses")
    for pos in ("noun", "verb", "adj", "adv"):
        counts = Counter(r["label"] for r in wic if r["pos"] == pos)
        print(f"  {pos}: same sense {counts[1]}, different sense {counts[0]}")


if __name__ == "__main__":
    main()
