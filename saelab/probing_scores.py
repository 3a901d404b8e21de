"""notebook 04: scores of a probe: macro-F1 with a percentile bootstrap interval, and `ProbeResult`.

`macro_f1(y_true, y_pred)` matches `sklearn.metrics.f1_score(average="macro")` and adds an interval by resampling
test items; `ProbeResult` is what `saelab.probing.fit_probe` returns (one flat table row via `.row()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class F1Score:
    """Macro-F1 on a test set with a percentile bootstrap interval over test items."""

    value: float
    low: float
    high: float
    n_boot: int
    level: float = 0.95

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


def macro_f1(y_true, y_pred, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> F1Score:
    """Macro-F1 of predictions, with a percentile bootstrap interval (test items resampled `n_boot` times)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be 1-D and of the same, non-zero length; got {y_true.shape} and "
                         f"{y_pred.shape}.")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}.")
    classes, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = codes[: len(y_true)], codes[len(y_true):]
    value = float(_macro_f1_rows(t[None], p[None], len(classes))[0])
    if n_boot < 1:
        return F1Score(value, math.nan, math.nan, 0, level)
    rng = np.random.default_rng(seed)
    scores = []
    for start in range(0, n_boot, 200):  # chunks keep memory at 200 x n
        idx = rng.integers(0, len(t), size=(min(200, n_boot - start), len(t)))
        scores.append(_macro_f1_rows(t[idx], p[idx], len(classes)))
    scores = np.concatenate(scores)
    alpha = (1 - level) / 2
    return F1Score(value, float(np.quantile(scores, alpha)), float(np.quantile(scores, 1 - alpha)), n_boot, level)


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
                "ci_high": self.f1.high, "accuracy": self.accuracy, "n_features": self.n_features,
                **{f"param_{k}": v for k, v in self.params.items()}, "seconds": self.seconds}

__all__ = ["F1Score", "ProbeResult", "macro_f1"]
