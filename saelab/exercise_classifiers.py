"""Checks for the exercises of notebooks 03 (ClassifSAE: the normalised reconstruction loss, the activation rate)
and 04 (MOSAIC: binarized features, macro-F1).

Each check compares the learner's function with saelab's own on inputs built to expose the typical mistakes, and
names the likely mistake in an `AssertionError` when they differ. The learner's function is always called through
`call_learner`, so a stub's `NotImplementedError` passes through and any other exception becomes a hint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score

from saelab.classifsae import normalized_reconstruction_loss
from saelab.concept_metrics import activation_rate
from saelab.exercise_basics import as_float, as_tensor, call_learner


def _first_hint(mine: float, wrong: dict[str, float], tol: float = 1e-6) -> str | None:
    return next((hint for hint, value in wrong.items() if abs(mine - value) < tol), None)


# ----------------------------------------------------------------------------------------------------------------
# Notebook 03
# ----------------------------------------------------------------------------------------------------------------

def check_normalized_reconstruction(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
    """Exercise 03.2: `fn(x, x_hat)` (both [B, d]) must give the mean over the batch of each item's squared error
    summed over dimensions, divided by the item's distance (not squared) to the batch mean."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 6, generator=g) * torch.linspace(0.5, 3, 12)[:, None]
    x[:, 2] += 40.0  # a large constant coordinate: dividing by ||x|| instead of the centred distance shows
    x_hat = x + 0.7 * torch.randn(12, 6, generator=g)
    expected = float(normalized_reconstruction_loss(x, x_hat))
    mine = as_float(call_learner(fn, x.clone(), x_hat.clone()), "your loss")
    if abs(mine - expected) < 1e-4 * max(1.0, abs(expected)):
        print(f"correct: {mine:.4f} on a batch of {len(x)} items with a large constant coordinate")
        return
    err = (x_hat - x).pow(2).sum(-1)
    dist = (x - x.mean(0)).norm(dim=-1)
    wrong = {"you divided by the squared distance: the paper divides by the distance itself, ||x - mean||":
                 float((err / dist.pow(2)).mean()),
             "the distance is to the batch mean, not to 0: centre x before taking its norm":
                 float((err / x.norm(dim=-1)).mean()),
             "that is a ratio of sums: divide each item's error by its own distance, then average":
                 float(err.sum() / dist.sum()),
             "you averaged the squared error over dimensions: sum it over dimensions": float((err / 6 / dist).mean()),
             "that is a sum over the batch: average over the B items": float((err / dist).sum())}
    hint = _first_hint(mine, wrong, 1e-4 * max(1.0, abs(expected)))
    raise AssertionError(hint or f"got {mine:.4f}, expected {expected:.4f}: mean_i ||x_hat_i - x_i||^2 / "
                                 "||x_i - mean(x)||")


def _concepts() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(40, 10, generator=g)) * (torch.rand(40, 10, generator=g) < 0.3)
    z[:, [3, 7]] = 0.0  # two dead concepts
    z[5, 0] = 2.0
    return z


def check_activation_rate(fn: Callable[[torch.Tensor], Any]) -> None:
    """Exercise 03.3: `fn(z)` (concept activations [sentences, concepts]) must give the mean, over the concepts that
    fire on at least one sentence, of the share of sentences on which each fires (activation > 0)."""
    z = _concepts()
    expected = activation_rate(z, alive_only=True)
    mine = as_float(call_learner(fn, z.clone()), "your function")
    if abs(mine - expected) < 1e-6:
        print(f"correct: activation rate {mine:.3f} over the {int((z > 0).any(0).sum())} live concepts of "
              f"{z.shape[1]}")
        return
    on = (z > 0).float()
    wrong = {"the dead concepts went into the mean: average over the concepts that fire at least once":
                 float(on.mean()),
             "that is the share of sentences on which *any* concept fires: take each concept's share of sentences "
             "(dim 0), then average over concepts": float(on.amax(1).mean()),
             "that is the number of concepts per sentence: divide by the number of sentences, per concept":
                 float(on.sum(1).mean()),
             "that is a count of firings, not a share: divide by the number of sentences":
                 float(on.sum(0)[on.sum(0) > 0].mean())}
    raise AssertionError(_first_hint(mine, wrong) or f"got {mine:.4f}, expected {expected:.4f}: per live concept "
                                                     "the share of sentences where it is > 0, then the mean")


# ----------------------------------------------------------------------------------------------------------------
# Notebook 04
# ----------------------------------------------------------------------------------------------------------------

def check_binarize(fn: Callable[[np.ndarray, float], Any]) -> None:
    """Exercise 04.3: `fn(X, t)` (pooled features, a numpy array) must give `X > t` as 0/1 floats, same shape."""
    rng = np.random.default_rng(0)
    feats = rng.poisson(0.8, size=(30, 20)).astype(float)
    for t in (2.0, 1.0, 0.0):
        expected = (feats > t).astype(float)
        mine = call_learner(fn, feats.copy(), t)
        mine = as_tensor(mine.toarray() if hasattr(mine, "toarray") else mine, "your function").double().numpy()
        if mine.shape != feats.shape:
            raise AssertionError(f"shape {mine.shape}; expected the features' own shape {feats.shape}")
        if np.array_equal(mine, expected):
            continue
        wrong = {"`>=` switches on the latents exactly at the threshold: the rule is X > t (strictly)":
                     (feats >= t).astype(float),
                 "the values came back: binarize to 0/1": feats * (feats > t),
                 "the threshold was ignored (X > 0): compare with t": (feats > 0).astype(float),
                 "0 and 1 are swapped: 1 where X > t": (feats <= t).astype(float)}
        hint = next((h for h, v in wrong.items() if np.array_equal(mine, v)), "1.0 where X > t, else 0.0")
        raise AssertionError(f"t={t:g}: {hint}")
    print(f"correct: your binarization matches X > t on {feats.shape[0]} texts for t = 2, 1 (the paper's) and 0")


def check_macro_f1(fn: Callable[[np.ndarray, np.ndarray], Any]) -> None:
    """Exercise 04.4: `fn(y_true, y_pred)` (integer labels) must give macro-F1: the unweighted mean over the classes
    of y_true of each class's F1 (0 for a class never predicted)."""
    y_true = np.array([0] * 12 + [1] * 6 + [2] * 3 + [3] * 3)
    y_pred = np.array([0] * 10 + [1, 2] + [1] * 4 + [0, 0] + [2, 0, 0] + [0, 1, 2])
    classes = np.unique(y_true)
    expected = f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    mine = as_float(call_learner(fn, y_true.copy(), y_pred.copy()), "your function")
    if abs(mine - expected) < 1e-6:
        print(f"correct: macro-F1 {mine:.4f} on {len(y_true)} items, 4 classes, one never predicted (accuracy "
              f"{np.mean(y_true == y_pred):.3f})")
        return
    seen = np.unique(y_pred)
    wrong = {"that is accuracy (= micro-F1): average the per-class F1 scores instead": float(np.mean(y_true == y_pred)),
             "that weights the classes by their size: macro-F1 gives every class the same weight":
                 f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0),
             "a class the model never predicts still counts, with F1 = 0: average over every class of y_true":
                 f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0),
             "that is macro-precision: F1 = 2 P R / (P + R) per class":
                 float(np.mean([np.mean(y_true[y_pred == c] == c) if (y_pred == c).any() else 0.0 for c in classes])),
             "that is macro-recall: F1 = 2 P R / (P + R) per class":
                 float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))}
    raise AssertionError(_first_hint(mine, wrong) or f"got {mine:.4f}, expected {expected:.4f}: per class F1 = "
                                                     "2 TP / (2 TP + FP + FN), then the plain mean")


__all__ = ["check_activation_rate", "check_binarize", "check_macro_f1", "check_normalized_reconstruction"]
