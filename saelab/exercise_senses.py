"""Checks for the exercises of notebook 05 (PS-Eval): the top-1 rule, the confusion matrix and specificity, and
Jaccard@k.

Each check compares the learner's function with `saelab.polysemy` on inputs built to expose the typical mistakes
(contexts where no latent fires, pairs of them), and names the likely mistake in an `AssertionError` when they
differ. The learner's function is called through `call_learner`: a stub's `NotImplementedError` passes through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from saelab.exercise_basics import as_float, as_tensor, call_learner
from saelab.polysemy import confusion, jaccard_at_k, metrics_from_confusion, top_latents


def _codes(n: int = 12, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.relu(torch.randn(n, d, generator=g)) * (torch.rand(n, d, generator=g) < 0.35)
    codes[0] = 0.0  # a context on which no latent fires
    codes[3] = 0.0
    return codes


def check_top1(fn: Callable[[torch.Tensor], Any]) -> None:
    """Exercise 05.1: `fn(codes)` (codes [contexts, d_sae]) must give each context's most active latent, and -1 for a
    context on which no latent is active."""
    codes = _codes()
    expected = top_latents(codes, 1)[0][:, 0]
    mine = as_tensor(call_learner(fn, codes.clone()), "your function").flatten()
    if mine.shape != expected.shape:
        raise AssertionError(f"shape {tuple(mine.shape)}; expected one latent id per context, {tuple(expected.shape)}")
    if torch.equal(mine.long(), expected):
        print(f"correct: the top-1 latent of {len(codes)} contexts, -1 on the {int((expected < 0).sum())} where "
              "nothing fires")
        return
    argmax = codes.argmax(1)
    if torch.equal(mine.long(), argmax):
        raise AssertionError("a context on which no latent fires got latent 0 (argmax of all zeros): return -1 "
                             "there, or two silent contexts would count as 'same latent'")
    if torch.allclose(mine.double(), codes.max(1).values.double()):
        raise AssertionError("those are the top activations: return the latent's index (argmax), not its value")
    if torch.equal(mine.long(), codes.argmin(1)):
        raise AssertionError("argmin picks the least active latent: take the argmax")
    raise AssertionError(f"got {mine.tolist()}, expected {expected.tolist()}: argmax per row, -1 where the row is 0")


def _pairs() -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(0)
    top1 = torch.as_tensor(rng.integers(0, 3, size=(40, 2)))
    top1[:6, 0] = -1   # silent contexts: -1 == -1 must not count as the same latent
    top1[:3, 1] = -1
    labels = rng.integers(0, 2, size=40)
    labels[:3] = [0, 1, 0]
    return top1, labels


def check_confusion(fn: Callable[[torch.Tensor, np.ndarray], Any]) -> None:
    """Exercise 05.2: `fn(top1, labels)` (top1 [pairs, 2] with -1 where no latent fires; labels 1 = same sense) must
    return {"tp", "fn", "fp", "tn", "specificity"} with positive = same top-1 latent."""
    top1, labels = _pairs()
    same = ((top1[:, 0] == top1[:, 1]) & (top1[:, 0] >= 0)).numpy()
    ours = confusion(labels, same)
    ours["specificity"] = metrics_from_confusion(ours)["specificity"]
    mine = call_learner(fn, top1.clone(), labels.copy())
    if not isinstance(mine, dict) or not {"tp", "fn", "fp", "tn", "specificity"} <= set(mine):
        raise AssertionError(f"got {mine!r}: return a dict with the keys tp, fn, fp, tn and specificity")
    cells = {k: int(as_float(mine[k], f"your {k}")) for k in ("tp", "fn", "fp", "tn")}
    if (cells["tp"], cells["tn"]) == (ours["tn"], ours["tp"]) and ours["tp"] != ours["tn"]:
        raise AssertionError("TP and TN are swapped: the positive class is 'same latent' (label 1 and same = TP)")
    loose = confusion(labels, (top1[:, 0] == top1[:, 1]).numpy())
    if cells == loose and loose != {k: ours[k] for k in cells}:
        raise AssertionError("two contexts where nothing fires (-1 and -1) counted as the same latent: a context "
                             "with no active latent shares nothing")
    for key in ("tp", "fn", "fp", "tn"):
        if cells[key] != ours[key]:
            raise AssertionError(f"{key} = {cells[key]}, expected {ours[key]}: label 1 & same = TP, label 1 & "
                                 "different = FN, label 0 & same = FP, label 0 & different = TN")
    spec = as_float(mine["specificity"], "your specificity")
    if abs(spec - ours["specificity"]) > 1e-9:
        tp, fn_, fp, tn = (ours[k] for k in ("tp", "fn", "fp", "tn"))
        wrong = {"that is TN / (TN + FN) (the negative predictive value): specificity is TN / (TN + FP)":
                     tn / (tn + fn_),
                 "that is recall, TP / (TP + FN): specificity is TN / (TN + FP)": tp / (tp + fn_),
                 "that is FP / (TN + FP), the false-positive rate: specificity is 1 minus it": fp / (tn + fp)}
        hint = next((h for h, v in wrong.items() if abs(spec - v) < 1e-9), "specificity = TN / (TN + FP)")
        raise AssertionError(f"specificity {spec:.4f}, expected {ours['specificity']:.4f}: {hint}")
    print(f"correct: {ours} on {len(labels)} pairs, including silent contexts")


def check_jaccard(fn: Callable[[torch.Tensor, torch.Tensor, int], Any]) -> None:
    """Exercise 05.3: `fn(codes_1, codes_2, k)` (codes [pairs, d_sae]) must give, per pair, |A ∩ B| / |A ∪ B| of the
    two contexts' top-k *active* latents (A, B), and 0 when both are empty."""
    codes_1, codes_2 = _codes(seed=1), _codes(seed=2)
    codes_2[5:8] = codes_1[5:8] * 1.5  # pairs that share everything
    for k in (3, 6):
        expected = jaccard_at_k(codes_1, codes_2, k)
        mine = as_tensor(call_learner(fn, codes_1.clone(), codes_2.clone(), k), "your function").double().flatten()
        if mine.shape != (len(expected),):
            raise AssertionError(f"shape {tuple(mine.shape)}; expected one score per pair, ({len(expected)},)")
        if np.allclose(mine.numpy(), expected, atol=1e-9, equal_nan=False):
            continue
        if torch.isnan(mine).any():
            raise AssertionError("NaN: a pair where neither context has an active latent has an empty union; "
                                 "its Jaccard is 0")
        plain = jaccard_at_k(codes_1, codes_2, k, require_active=False)
        if np.allclose(mine.numpy(), plain):
            raise AssertionError(f"k={k}: inactive latents (value 0) entered the top-k sets: keep only values > 0")
        ids_1, ids_2 = top_latents(codes_1, k)[0], top_latents(codes_2, k)[0]
        inter = np.array([len((set(a) & set(b)) - {-1}) for a, b in zip(ids_1.tolist(), ids_2.tolist())])
        if np.allclose(mine.numpy(), inter / k):
            raise AssertionError(f"k={k}: you divided the intersection by k: divide by the size of the union")
        if np.allclose(mine.numpy(), inter):
            raise AssertionError(f"k={k}: that is the size of the intersection: divide it by the size of the union")
        raise AssertionError(f"k={k}: got {mine[:6].tolist()}, expected {expected[:6].tolist()}")
    print(f"correct: Jaccard@k matches polysemy.jaccard_at_k on {len(codes_1)} pairs for k = 3 and 6")


__all__ = ["check_confusion", "check_jaccard", "check_top1"]
