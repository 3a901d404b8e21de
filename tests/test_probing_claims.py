"""Notebook 04's protocol: trees pruned by CV, variants chosen on the training split, and the claims' verdicts."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score

from saelab import probing, probing_claims, probing_eval, probing_scores


def data(n=240, d=30, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.poisson(0.3, size=(n, d)).astype(np.float32)
    X[:, 3] = y * rng.integers(2, 5, n) * (rng.random(n) < 0.8)  # informative, but not perfectly
    return X, y


def test_tree_depth_is_chosen_by_cross_validation():
    X, y = data()
    result = probing.fit_probe(sp.csr_matrix(X[:160]), y[:160], X[160:], y[160:], "tree", cv=3, n_boot=50)
    assert result.params["max_depth"] in probing.TREE_DEPTHS
    assert result.params["min_samples_leaf"] in probing.TREE_MIN_LEAF
    assert 0 <= result.params["cv_f1"] <= 1
    # one informative column: a pruned tree is far shallower than the tree grown until pure
    grown = probing.fit_probe(X[:160], y[:160], X[160:], y[160:], "tree", max_depth=None, n_boot=0)
    assert result.params["depth"] < grown.params["depth"] and np.isnan(grown.params["cv_f1"])
    with pytest.raises(ValueError, match="max_depth"):
        probing.fit_probe(X[:160], y[:160], X[160:], y[160:], "tree", max_depth=0)


def test_logreg_records_its_cross_validated_score():
    X, y = data()
    result = probing.fit_probe(X[:160], y[:160], X[160:], y[160:], "logreg", cv=3, n_boot=0)
    assert 0.5 < result.params["cv_f1"] <= 1 and result.row()["cv_f1"] == result.params["cv_f1"]
    single = probing.fit_probe(X[:160], y[:160], X[160:], y[160:], "logreg", Cs=[1.0], n_boot=0)
    assert np.isnan(single.params["cv_f1"])


def test_best_per_source_chooses_on_the_training_split_not_the_test():
    rows = pd.DataFrame([
        {"task": "t", "classifier": "logreg", "variant": "a", "cv_f1": 0.9, "macro_f1": 0.5, "fit": 0},
        {"task": "t", "classifier": "logreg", "variant": "b", "cv_f1": 0.6, "macro_f1": 0.8, "fit": 1}])
    by_cv = probing_eval.best_per_source({"s": rows}, ["t"], ["logreg"])
    by_test = probing_eval.best_per_source({"s": rows}, ["t"], ["logreg"], by="macro_f1")
    assert by_cv.variant.tolist() == ["a"] and by_test.variant.tolist() == ["b"]
    with pytest.raises(ValueError, match="by must be"):
        probing_eval.best_per_source({"s": rows}, ["t"], by="test")
    with pytest.raises(ValueError, match="No cv_f1"):
        probing_eval.best_per_source({"s": rows.assign(cv_f1=np.nan)}, ["t"], ["logreg"])


def test_macro_f1_contrast_is_a_sum_of_differences():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    preds = [np.where(rng.random(200) < q, y, rng.integers(0, 3, 200)) for q in (0.9, 0.5, 0.7, 0.6)]
    f = [f1_score(y, p, average="macro") for p in preds]
    est = probing_scores.macro_f1_contrast(y, preds[:2], preds[2:], n_boot=300)
    assert est.value == pytest.approx(f[0] + f[1] - f[2] - f[3])
    assert est.low < est.value < est.high
    one = probing_scores.macro_f1_contrast(y, preds[:1], preds[2:3], n_boot=300)
    same = probing_scores.macro_f1_difference(y, preds[0], preds[2], n_boot=300)
    assert (one.value, one.low, one.high) == pytest.approx((same.value, same.low, same.high))
    with pytest.raises(ValueError, match="same, non-zero number"):
        probing_scores.macro_f1_contrast(y, preds[:2], preds[2:3])


class Log:
    """A ProbeLog stand-in: test labels of one task and the predictions of numbered fits."""

    def __init__(self, y, predictions):
        self.y, self.predictions = y, predictions

    def labels(self, task):
        return None, self.y


def constructed(sae_quality, seed=0, n=400, counts=-0.1):
    """Predictions of known quality: each fit is right on a share of the test items; returns log, summary, fits."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)

    def right(q):
        return np.where(rng.random(n) < q, y, (y + 1) % 3)

    quality = {("SAE, binarized", "logreg"): sae_quality, ("SAE, continuous", "logreg"): sae_quality - 0.1,
               ("hidden state, last", "logreg"): 0.6, ("hidden state, mean", "logreg"): 0.6,
               ("TF-IDF", "logreg"): 0.6, ("SAE, binarized", "tree"): sae_quality,
               ("hidden state, last", "tree"): 0.4}
    predictions, rows = [], []
    for (features, clf), q in quality.items():
        rows.append({"task": "t", "features": features, "classifier": clf, "cv_f1": q, "fit": len(predictions)})
        predictions.append(right(q))
    predictions.append(right(sae_quality + counts))  # top-n counts, for the binarization claim
    return Log(y, predictions), pd.DataFrame(rows), {"t": (0, len(predictions) - 1)}


def outcomes(verdicts):
    return {v.claim.split()[0] + (v.claim.split("beat ")[-1][:4] if v.claim.startswith("C2") else ""): v.outcome
            for v in verdicts}


def test_claims_on_constructed_cases():
    log, summary, fits = constructed(0.9)
    verdicts = probing_claims.claims(log, summary, fits, n_boot=400)
    got = outcomes(verdicts)
    assert got["C1"] == "not testable" and "0.8" in verdicts[0].reason
    assert got["C2the "] == "held" and got["C2TF-I"] == "held"
    assert got["C3"] == "held" and verdicts[4].margin == probing_claims.MARGIN_F1
    assert got["C4"] == "held"  # tree gap 0.5 against a linear gap 0.3
    assert all(v.correction.startswith("Holm") for v in verdicts if v.outcome != "not testable")
    log, summary, fits = constructed(0.3, counts=0.3)
    got = outcomes(probing_claims.claims(log, summary, fits, n_boot=400))
    assert got["C2the "] == "contradicted" and got["C3"] == "contradicted"
    log, summary, fits = constructed(0.6, n=30)
    got = outcomes(probing_claims.claims(log, summary, fits, n_boot=400))
    assert got["C2TF-I"] == "inconclusive"


def test_chosen_needs_one_row():
    _, summary, _ = constructed(0.9)
    with pytest.raises(ValueError, match="Expected one chosen row"):
        probing_claims.chosen(summary, "t", "nothing")
    assert probing_claims.best_sae(summary, "t")["features"] == "SAE, binarized"


def test_verdict_table_gates_and_says_smoke_plainly(capsys):
    from types import SimpleNamespace

    from saelab import stats

    est = stats.Estimate(0.1, 0.05, 0.15, distribution=np.linspace(0.05, 0.15, 50))
    verdicts = [stats.verdict(est, claim="C1 t: x", preconditions={"threshold transferable": (False, "borrowed")}),
                stats.verdict(est, claim="C2 t: y")]
    unchecked = SimpleNamespace(cfg=SimpleNamespace(metadata={}))  # no quality record: below the gate
    table = probing_claims.verdict_table(verdicts, {"sae": unchecked}, smoke=False)
    assert table.verdict.tolist() == ["not testable", "inconclusive: SAE below quality gate"]
    assert table["rule outcome"].tolist() == ["not testable", "held"]
    assert table["paper's number"].tolist() == [probing_claims.PAPER_NUMBERS["C1"], probing_claims.PAPER_NUMBERS["C2"]]
    assert table.ours.tolist()[1] == "0.100 [0.050, 0.150]"
    smoke = probing_claims.verdict_table(verdicts, {"sae": unchecked}, smoke=True)
    assert all(v.startswith("smoke run, not a finding") for v in smoke.verdict)
    assert probing_claims.SMOKE_BANNER in capsys.readouterr().out


def test_probe_log_keeps_each_fits_test_predictions():
    X, y = data()
    tasks = {"t": {"train": (["a"] * 160, y[:160]), "test": (["b"] * 80, y[160:])}}
    log = probing_eval.ProbeLog(tasks, {("t", "train"): np.arange(160), ("t", "test"): np.arange(160, 240)}, cv=3)
    fits = log.probe(X, "t", variant="v")
    frame = log.results()
    assert frame.fit.tolist() == [0, 1] and len(log.predictions) == 2
    assert np.array_equal(log.predictions[1], fits["tree"].y_pred)
    assert frame.cv_f1.notna().all()
