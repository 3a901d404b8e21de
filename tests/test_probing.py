"""saelab.probing: pooling, binarization and macro-F1 against hand-computed values and scikit-learn."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import f1_score

from saelab import probing, probing_eval, probing_padded, probing_scores
from saelab.activations import Activations, extract
from saelab.probing_padded import BOS, PAD, REAL
from saelab.sae import SAE, SAEConfig

# Two texts of three rows each, as a left-padded batch gives them: text A = [BOS, a1, a2], text B = [PAD, BOS, b1].
# Codes are non-negative, as SAE latents are; d_sae = 4.
CODES = torch.tensor([
    [9.0, 0, 0, 5],   # A: BOS
    [1.0, 3, 0, 2],   # A: a1
    [0.0, 2, 4, 0],   # A: a2
    [0.0, 0, 7, 1],   # B: PAD
    [9.0, 0, 0, 5],   # B: BOS
    [2.0, 0, 0, 0],   # B: b1 (one active latent only)
])
LENGTHS = torch.tensor([3, 3])
KINDS = torch.tensor([BOS, REAL, REAL, PAD, BOS, REAL], dtype=torch.int8)
REAL_ROWS = KINDS == REAL

# By hand. top-2 votes per row: A: a1 -> {1, 3}, a2 -> {2, 1}; BOS -> {0, 3}. B: PAD -> {2, 3}, b1 -> {0} only
# (its second-largest code is 0, so it casts no second vote).
EXPECTED_REAL = {
    "topn": [[0, 2, 1, 1], [1, 0, 0, 0]],
    "mean": [[0.5, 2.5, 2, 1], [2, 0, 0, 0]],
    "max": [[1, 3, 4, 2], [2, 0, 0, 0]],
    "sum": [[1, 5, 4, 2], [2, 0, 0, 0]],
    "last": [[0, 2, 4, 0], [2, 0, 0, 0]],
}
EXPECTED_FAITHFUL = {  # every row of the padded batch, as the anchor pools it
    "topn": [[1, 2, 1, 2], [2, 0, 1, 2]],
    "mean": [[10 / 3, 5 / 3, 4 / 3, 7 / 3], [11 / 3, 0, 7 / 3, 2]],
    "max": [[9, 3, 4, 5], [9, 0, 7, 5]],
    "sum": [[10, 5, 4, 7], [11, 0, 7, 6]],
    "last": [[0, 2, 4, 0], [2, 0, 0, 0]],  # left padding: the last position is a real token either way
}


@pytest.mark.parametrize("pooling", probing.POOLINGS)
def test_pool_codes_by_hand(pooling):
    real = probing.pool_codes(CODES, LENGTHS, pooling, top_n=2, keep=REAL_ROWS)
    faithful = probing.pool_codes(CODES, LENGTHS, pooling, top_n=2)
    torch.testing.assert_close(real, torch.tensor(EXPECTED_REAL[pooling]), check_dtype=False)
    torch.testing.assert_close(faithful, torch.tensor(EXPECTED_FAITHFUL[pooling]), check_dtype=False)


def test_binarized_counts_show_the_padding_difference():
    real = probing.pool_codes(CODES, LENGTHS, "topn", top_n=2, keep=REAL_ROWS)
    faithful = probing.pool_codes(CODES, LENGTHS, "topn", top_n=2)
    # the anchor's threshold 1.0: "won a top-n slot on more than one row"
    assert probing.binarize(real, 1.0).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]
    assert probing.binarize(faithful, 1.0).tolist() == [[0, 1, 0, 1], [1, 0, 0, 1]]
    # text B's faithful features come from BOS and padding alone: its one real token votes only for latent 0
    assert probing.binarize(real, 0.0).tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]


def identity_sae(d: int = 4) -> SAE:
    """A ReLU SAE whose codes equal its (non-negative) inputs: W_enc = I, biases 0."""
    sae = SAE(SAEConfig(d_in=d, d_sae=d, architecture="relu", hook_name="h"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
    return sae


def test_sae_features_real_and_faithful():
    acts = Activations(["h"], "none", {"h": CODES}, LENGTHS, torch.arange(6), {})
    padded = probing_padded.PaddedTokens(acts, KINDS, batch_size=2, padding_side="left")
    sae = identity_sae()
    faithful = probing.sae_features(sae, padded, top_n=2, faithful=True, batch_texts=1, progress=False)
    real = probing.sae_features(sae, padded, top_n=2, faithful=False, batch_texts=1, progress=False)
    only_real = probing.sae_features(sae, padded.real_only(), top_n=2, progress=False)
    for pooling in probing.POOLINGS:
        assert sp.issparse(faithful[pooling])
        np.testing.assert_allclose(faithful[pooling].toarray(), EXPECTED_FAITHFUL[pooling], rtol=1e-6)
        np.testing.assert_allclose(real[pooling].toarray(), EXPECTED_REAL[pooling], rtol=1e-6)
        np.testing.assert_allclose(only_real[pooling].toarray(), EXPECTED_REAL[pooling], rtol=1e-6)
    with pytest.raises(ValueError, match="padded_tokens"):
        probing.sae_features(sae, padded.real_only(), top_n=2, faithful=True, progress=False)


def test_padded_tokens_match_extract(tiny, one_thread):
    texts = ["the cat sat on the mat", "dogs", "a b c", "hello there my friend", "x"]
    hook = "blocks.1.hook_resid_pre"
    padded = probing_padded.padded_tokens(tiny, texts, hook, batch_size=3, cache=None, progress=False)
    ids = tiny.tokenizer(texts)["input_ids"]
    widths = [max(len(i) for i in ids[:3])] * 3 + [max(len(i) for i in ids[3:])] * 2
    assert padded.activations.lengths.tolist() == widths
    text_of_row = torch.repeat_interleave(torch.arange(len(texts)), padded.activations.lengths)
    for i in range(len(texts)):
        kinds = padded.kinds[text_of_row == i]
        assert int((kinds == BOS).sum()) == 1 and int((kinds == PAD).sum()) == widths[i] - len(ids[i])
        assert (kinds[: widths[i] - len(ids[i])] == PAD).all()  # left padding
    reference = extract(tiny, texts, hook, pooling="none", progress=False)
    real = padded.real_only()
    assert real.lengths.tolist() == reference.lengths.tolist()
    assert torch.equal(real.token_ids, reference.token_ids)
    torch.testing.assert_close(real[hook], reference[hook], atol=1e-5, rtol=1e-5)


def test_padded_tokens_cache(tiny, one_thread, tmp_path):
    texts = ["one two", "three"]
    first = probing_padded.padded_tokens(tiny, texts, "blocks.0.hook_resid_post", batch_size=2, cache=tmp_path / "p",
                                  progress=False)
    again = probing_padded.padded_tokens(tiny, texts, "blocks.0.hook_resid_post", batch_size=2, cache=tmp_path / "p",
                                  progress=False)
    assert again.activations.folder == tmp_path / "p"
    torch.testing.assert_close(again.activations["blocks.0.hook_resid_post"],
                               first.activations["blocks.0.hook_resid_post"])
    assert torch.equal(again.kinds, first.kinds)


def test_binarize_kinds_and_bad_thresholds():
    X = np.array([[0.0, 1.0, 2.5], [3.0, 0.0, 1.0]])
    expected = [[0, 0, 1], [1, 0, 0]]
    assert probing.binarize(X, 1.0).tolist() == expected
    assert probing.binarize(sp.csr_matrix(X), 1.0).toarray().tolist() == expected
    assert probing.binarize(torch.tensor(X), 1.0).tolist() == expected
    for bad, message in [(-0.5, "negative"), (3.0, "no value exceeds"), (float("nan"), "finite"),
                         ("1", "finite"), (True, "finite")]:
        with pytest.raises(ValueError, match=message):
            probing.binarize(X, bad)


def test_top_n_out_of_range():
    for bad, error in [(0, ValueError), (5, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="top_n"):
            probing.pool_codes(CODES, LENGTHS, "topn", top_n=bad)
    with pytest.raises(ValueError, match="top_n"):
        probing.sae_features(identity_sae(), Activations(["h"], "none", {"h": CODES}, LENGTHS, torch.arange(6), {}),
                             top_n=99, progress=False)
    with pytest.raises(ValueError, match="no token rows"):
        probing.pool_codes(CODES, LENGTHS, "mean", keep=torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.bool))
    with pytest.raises(ValueError, match="Unknown pooling"):
        probing.pool_codes(CODES, LENGTHS, "median")


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, 200))  # a class 3 only in predictions
    score = probing_scores.macro_f1(y_true, y_pred, n_boot=500, seed=3)
    assert score.value == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert score.low <= score.value <= score.high and score.high - score.low < 0.3
    # each bootstrap replicate is sklearn's macro-F1 of the resample (classes absent from a resample drop out)
    idx = rng.integers(0, 12, size=(50, 12))
    rows = probing_scores._macro_f1_rows(y_true[:12][idx], y_pred[:12][idx], 4)
    for r, i in zip(rows, idx):
        assert r == pytest.approx(f1_score(y_true[:12][i], y_pred[:12][i], average="macro"))
    with pytest.raises(ValueError, match="same"):
        probing_scores.macro_f1(y_true, y_pred[:-1])


def test_macro_f1_difference_is_a_paired_bootstrap():
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 300)
    good = np.where(rng.random(300) < 0.9, y_true, rng.integers(0, 3, 300))
    poor = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 3, 300))
    d = probing_scores.macro_f1_difference(y_true, good, poor, n_boot=500)
    assert d.value == pytest.approx(f1_score(y_true, good, average="macro") - f1_score(y_true, poor, average="macro"))
    assert d.low > 0 and d.n == 300
    same = probing_scores.macro_f1_difference(y_true, good, good, n_boot=100)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    score = probing_scores.macro_f1(y_true, good, n_boot=300, level=0.9)
    assert (score.estimate.low, score.estimate.high, score.estimate.level) == (score.low, score.high, 0.9)
    with pytest.raises(ValueError, match="same"):
        probing_scores.macro_f1_difference(y_true, good, poor[:-1])


def synthetic(n=240, d=30, seed=0):
    """Counts-like features where column 7 decides the class (plus noise columns)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.poisson(0.3, size=(n, d)).astype(np.float32)
    X[:, 7] = y * rng.integers(3, 6, n)
    return X, y


@pytest.mark.parametrize("classifier", probing.CLASSIFIERS)
def test_fit_probe_scores_like_sklearn(classifier):
    X, y = synthetic()
    result = probing.fit_probe(sp.csr_matrix(X[:160]), y[:160], X[160:], y[160:], classifier, cv=3, n_boot=100)
    assert result.macro_f1 == pytest.approx(f1_score(y[160:], result.y_pred, average="macro"))
    assert result.macro_f1 == 1.0 and result.n_train == 160 and result.n_test == 80
    if classifier == "logreg":
        assert result.params["C"] in probing.DEFAULT_CS
        best = probing.top_latents(result, n=1)
        assert {row["latent"] for row in best if row["class"] == 1} == {7}
    else:
        assert result.params["depth"] >= 1


@pytest.mark.parametrize("classifier", probing.CLASSIFIERS)
def test_fit_probe_folds_in_parallel_give_the_serial_result(classifier, monkeypatch):
    X, y = synthetic()
    X[:, 7] += np.random.default_rng(1).poisson(1.0, len(X))  # a harder task, so C and the depth are really chosen
    fits = {}
    for jobs in (1, 2):
        monkeypatch.setattr(probing, "PROBE_JOBS", jobs)
        fits[jobs] = probing.fit_probe(X[:160], y[:160], X[160:], y[160:], classifier, cv=3, n_boot=100)
    assert fits[1].params == fits[2].params
    np.testing.assert_array_equal(fits[1].y_pred, fits[2].y_pred)


def test_fit_probe_bad_input():
    X, y = synthetic()
    with pytest.raises(ValueError, match="single class"):
        probing.fit_probe(X[:50], np.zeros(50), X[50:], y[50:])
    with pytest.raises(ValueError, match="rows but there are"):
        probing.fit_probe(X[:50], y[:49], X[50:], y[50:])
    with pytest.raises(ValueError, match="width"):
        probing.fit_probe(X[:50], y[:50], X[50:, :5], y[50:])
    with pytest.raises(ValueError, match="NaN"):
        bad = X[:50].copy()
        bad[0, 0] = np.nan
        probing.fit_probe(bad, y[:50], X[50:], y[50:])
    with pytest.raises(ValueError, match="Unknown classifier"):
        probing.fit_probe(X[:50], y[:50], X[50:], y[50:], "svm")


def test_texts_and_labels_of_different_lengths():
    train = ["good movie", "bad movie", "great film", "awful film", "good film", "bad film"]
    X_train, X_test, _ = probing.tfidf_features(train, ["good", "bad"], min_df=1)
    assert X_train.shape[0] == 6 and X_test.shape[1] == X_train.shape[1]
    with pytest.raises(ValueError, match="line up"):
        probing.fit_probe(X_train, [1, 0, 1, 0, 1], X_test, [1, 0])


def test_threshold_sweep():
    X, y = synthetic()
    rows = probing_eval.threshold_sweep(X[:160], y[:160], X[160:], y[160:], [0, 1, 2], "tree", n_boot=50)
    assert [r["threshold"] for r in rows] == [0, 1, 2]
    assert rows[0]["density"] > rows[2]["density"]
    assert all(r["macro_f1"] == 1.0 for r in rows)  # column 7 > 2 still separates the classes
    with pytest.raises(ValueError, match="out of range"):
        probing_eval.threshold_sweep(X[:160], y[:160], X[160:], y[160:], [1, 99])


def test_take_texts():
    acts = Activations(["h"], "none", {"h": CODES}, LENGTHS, torch.arange(6), {})
    sub = probing.take_texts(acts, [1])
    assert sub.lengths.tolist() == [3] and sub.token_ids.tolist() == [3, 4, 5]
    torch.testing.assert_close(sub["h"], CODES[3:])
    two = Activations(["h", "g"], "none", {"h": CODES, "g": -CODES}, LENGTHS, torch.arange(6), {})
    picked = probing.take_texts(two, [1, 0], hooks=["g"])
    assert picked.hooks == ["g"] and picked.lengths.tolist() == [3, 3]
    torch.testing.assert_close(picked["g"], -torch.cat([CODES[3:], CODES[:3]]))
    with pytest.raises(ValueError, match="No activations"):
        probing.take_texts(two, [0], hooks=["x"])


def test_zero_shot_uses_the_models_logits(tiny, one_thread, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    texts = ["i liked it", "it was dull and long"]
    words = ["a", "b", "c"]
    result = probing.zero_shot(tiny, texts, words, template="{text} ->", prefix="",
                               feature_hooks=["blocks.0.hook_resid_post"], cache=False, progress=False)
    ids = probing.label_token_ids(tiny.tokenizer, words, "")
    for i, text in enumerate(texts):
        tokens = tiny.tokenizer(f"{text} ->", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = tiny(tokens)[0, -1, ids]
        torch.testing.assert_close(result.logits[i], logits, atol=1e-4, rtol=1e-4)
    assert result.predictions.tolist() == result.logits.argmax(1).tolist()
    assert result.tokens.hooks == ["blocks.0.hook_resid_post"]
    assert result.accuracy(result.predictions) == 1.0
    calibrated = probing.zero_shot(tiny, texts, words, template="{text} ->", prefix="", calibrate=True,
                                   content_free=["N/A", "x"], cache=False, progress=False)
    prior = []
    for free in ["N/A", "x"]:
        tokens = tiny.tokenizer(f"{free} ->", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            prior.append(tiny(tokens)[0, -1, ids].softmax(0))
    expected = (calibrated.logits.log_softmax(1) - torch.stack(prior).mean(0).log()).argmax(1)
    assert calibrated.predictions.tolist() == expected.tolist()
    assert calibrated.raw_predictions.tolist() == result.predictions.tolist()
    with pytest.raises(ValueError, match="share a first token"):
        probing.label_token_ids(tiny.tokenizer, ["negative", "neutral"], " ")
    with pytest.raises(ValueError, match="labels for"):
        result.correct([0])


def test_binarization_explorer(one_thread):
    from saelab.widgets._common import ERROR_CLASS
    from saelab.widgets.binarization import BinarizationExplorer

    X, y = synthetic()
    explorer = BinarizationExplorer({"counts": (sp.csr_matrix(X[:160]), X[160:])}, y[:160], y[160:],
                                    threshold=1.0, classifier="tree", n_boot=50)
    assert explorer.last_result.macro_f1 == 1.0
    assert "threshold 1 " in explorer.status_bar.message.value and "macro-F1 1.000" in explorer.status_bar.message.value
    assert explorer.set_threshold(0.0) and set(explorer.history) == {("counts", "tree", 1.0), ("counts", "tree", 0.0)}
    assert explorer.slider.value == 0.0
    explorer.classifier.value = "logreg"
    assert ("counts", "logreg", 0.0) in explorer.history
    assert not explorer.set_threshold(-1.0)  # out of range: a message, no traceback
    assert ERROR_CLASS in explorer.status_bar.message._dom_classes
    assert "negative" in explorer.status_bar.message.value and explorer.last_result is None
    assert not explorer.set_threshold(99.0)
    assert "no value exceeds" in explorer.status_bar.message.value
    with pytest.raises(ValueError, match="line up"):
        BinarizationExplorer({"counts": (X[:160], X[160:])}, y[:150], y[160:])


def test_label_token_ids_skip_a_space_the_tokenizer_splits_off():
    """One rule for a label word's token, shared by zero-shot scoring and the classifier's label-token read-out."""
    class SpaceFirst:  # like tokenizers that emit "▁" or "Ġ" as a token of its own before some words
        vocab = {" ": 0, "good": 1, "bad": 2}

        def encode(self, text, add_special_tokens=False):
            return [0, self.vocab[text.strip()]] if text.startswith(" ") else [self.vocab[text]]

        def decode(self, ids):
            return "".join({v: k for k, v in self.vocab.items()}[i] for i in ids)

    assert probing.label_token_ids(SpaceFirst(), ["good", "bad"]) == [1, 2]
    with pytest.raises(ValueError, match="share a first token"):
        probing.label_token_ids(SpaceFirst(), ["good", "good"])
