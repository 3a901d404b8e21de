"""notebook 04: scores of a probe: macro-F1 with a percentile bootstrap interval, and `ProbeResult`.

`macro_f1(y_true, y_pred)` matches `sklearn.metrics.f1_score(average="macro")` and adds an interval by resampling
test items (`saelab.stats.bootstrap_interval`); `macro_f1_difference` compares two classifiers on the same test items
with a paired bootstrap; `ProbeResult` is what `saelab.probing.fit_probe` returns (one flat table row via `.row()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from saelab.stats import Estimate, bootstrap_interval, paired_difference


@dataclass(frozen=True)
class F1Score:
    """Macro-F1 on a test set with a percentile bootstrap interval over test items."""

    value: float
    low: float
    high: float
    n_boot: int
    level: float = 0.95
    estimate: Estimate | None = field(default=None, repr=False, compare=False)  # for saelab.stats.verdict

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _macro_f1_rows(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row of [B, n] label arrays, averaged over the classes present in that row's true or
    predicted labels (what `sklearn.metrics.f1_score(average="macro")` does)."""
    f1 = np.zeros(y_true.shape[0])
    present = np.zeros(y_true.shape[0])
    for c in range(n_classes):
        t, p = y_true == c, y_pred == c
        tp = (t & p).sum(1)
        fp_fn = (t ^ p).sum(1)
        here = (tp + fp_fn) > 0
        f1 += np.where(here, 2 * tp / np.maximum(2 * tp + fp_fn, 1), 0.0)
        present += here
    return f1 / np.maximum(present, 1)


def _statistic(n_classes: int):
    """Macro-F1 as a vectorised statistic of (true codes, predicted codes) [..., n], for saelab.stats."""
    def statistic(t: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
        t, p = np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1)
        rows = _macro_f1_rows(t.reshape(-1, t.shape[-1]), p.reshape(-1, p.shape[-1]), n_classes)
        return rows.reshape(t.shape[:-1])
    return statistic


def _codes(y_true, *predictions) -> tuple[int, np.ndarray, list[np.ndarray]]:
    """Labels as integer codes over the classes seen in any of the arrays (checked: 1-D, one length, non-empty)."""
    arrays = [np.asarray(y) for y in (y_true, *predictions)]
    if any(a.shape != arrays[0].shape for a in arrays) or arrays[0].ndim != 1 or len(arrays[0]) == 0:
        raise ValueError("y_true and the predictions must be 1-D and of the same, non-zero length; got "
                         + " and ".join(str(a.shape) for a in arrays) + ".")
    classes, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    return len(classes), codes[: len(arrays[0])], list(codes[len(arrays[0]):].reshape(len(predictions), -1))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}.")


def macro_f1(y_true, y_pred, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> F1Score:
    """Macro-F1 of predictions, with a percentile bootstrap interval (test items resampled `n_boot` times).

    The interval comes from `saelab.stats.bootstrap_interval` (resamples of the (true, predicted) pairs); the full
    `Estimate` (with its standard error and minimum detectable effect) is `.estimate` on the result.
    """
    _check_level(level)
    n_classes, t, (p,) = _codes(y_true, y_pred)
    value = float(_macro_f1_rows(t[None], p[None], n_classes)[0])
    if n_boot < 1:
        return F1Score(value, math.nan, math.nan, 0, level)
    est = bootstrap_interval(_statistic(n_classes), t, p, level=level, n_resamples=int(n_boot), seed=seed)
    return F1Score(value, est.low, est.high, n_boot, level, est)


def macro_f1_difference(y_true, pred_a, pred_b, *, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> Estimate:
    """macro-F1(pred_a) - macro-F1(pred_b) on the same test items, with a paired bootstrap interval (the same
    resampled items for both): the estimate to hand to `saelab.stats.verdict`."""
    _check_level(level)
    n_classes, t, (a, b) = _codes(y_true, pred_a, pred_b)
    return paired_difference(_statistic(n_classes), (t, a), (t, b), level=level, n_resamples=n_boot, seed=seed)


def macro_f1_contrast(y_true, plus, minus, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """sum of macro-F1 over the predictions in `plus` minus the sum over `minus`, on the same test items, with a
    paired bootstrap interval (one set of resampled items for every prediction).

    `plus=[a], minus=[b]` is `macro_f1_difference`; `plus=[tree_sae, linear_hidden], minus=[tree_hidden,
    linear_sae]` is a difference of differences ("trees gain more from SAE features than linear probes do").
    """
    _check_level(level)
    plus, minus = list(plus), list(minus)
    if not plus or len(plus) != len(minus):
        raise ValueError(f"plus and minus must hold the same, non-zero number of predictions, got {len(plus)} and "
                         f"{len(minus)}.")
    n_classes, t, codes = _codes(y_true, *plus, *minus)
    f1, k = _statistic(n_classes), len(plus)

    def contrast(t: np.ndarray, *p: np.ndarray, axis: int = -1) -> np.ndarray:
        return sum(f1(t, q, axis=axis) for q in p[:k]) - sum(f1(t, q, axis=axis) for q in p[k:])

    return bootstrap_interval(contrast, t, *codes, level=level, n_resamples=n_boot, seed=seed)


@dataclass
class ProbeResult:
    """A fitted classifier and its test-set scores."""

    classifier: str
    f1: F1Score
    accuracy: float
    y_pred: np.ndarray
    model: Any = field(repr=False)
    n_features: int
    n_train: int
    n_test: int
    params: dict[str, Any] = field(default_factory=dict)  # e.g. the C chosen by cross-validation, tree depth
    seconds: float = 0.0

    @property
    def macro_f1(self) -> float:
        return self.f1.value

    def row(self, **extra: Any) -> dict[str, Any]:
        """A flat dict for a results table."""
        return {**extra, "classifier": self.classifier, "macro_f1": self.f1.value, "ci_low": self.f1.low,
                "ci_high": self.f1.high, "cv_f1": float(self.params.get("cv_f1", math.nan)),
                "accuracy": self.accuracy, "n_features": self.n_features,
                **{f"param_{k}": v for k, v in self.params.items() if k != "cv_f1"}, "seconds": self.seconds}

__all__ = ["F1Score", "ProbeResult", "macro_f1", "macro_f1_contrast", "macro_f1_difference"]
