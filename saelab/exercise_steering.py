"""Checks for the exercises of notebook 06 (steering): token confidence C_k, the zero-guarded harmonic mean, and
Arad et al.'s output score.

Each check compares the learner's function with `saelab.steering` / `saelab.steering_eval` on inputs built to
expose the typical mistakes, and names the likely mistake in an `AssertionError` when they differ. The learner's
function is called through `call_learner`: a stub's `NotImplementedError` passes through, and any other exception
(a `ZeroDivisionError` on a zero rating, say) becomes a hint instead of a traceback from inside the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from saelab.exercise_basics import as_float, as_tensor, call_learner
from saelab.steering import output_score_from_logits, token_confidence
from saelab.steering_eval import harmonic_mean


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=tol, rtol=tol)


def check_token_confidence(fn: Callable[[torch.Tensor, int], Any]) -> None:
    """Exercise 06.1: `fn(logits, k)` (logits [n, vocab]) must give C_k per row: minus the mean log-probability of
    the k most likely next tokens."""
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(1)) * 3
    for k in (1, 4):
        want = token_confidence(logits, k)
        got = as_tensor(call_learner(fn, logits.clone(), k), "your function")
        if got.shape != want.shape:
            raise AssertionError(f"k={k}: expected one value per row, shape {tuple(want.shape)}, got "
                                 f"{tuple(got.shape)}")
        if _close(got, want):
            continue
        logprobs = torch.log_softmax(logits, -1).topk(k, -1).values
        wrong = {"the sign is flipped: C_k is the *negative* mean log-probability (>= 0)": -want,
                 "you summed over the k tokens; C_k is their mean (divide by k)": -logprobs.sum(-1),
                 "that uses the raw logits: take log_softmax first (log-probabilities)":
                     -logits.topk(k, -1).values.mean(-1),
                 "that is the mean probability, not the mean negative log-probability":
                     logprobs.exp().mean(-1)}
        hint = next((h for h, v in wrong.items() if _close(got, v) and (k > 1 or "summed" not in h)), None)
        raise AssertionError(f"k={k}: " + (hint or f"values differ (max diff {float((got - want).abs().max()):.3g})"))
    print("correct: your C_k matches saelab.steering.token_confidence for k = 1 and 4")


HARMONIC_CASES: tuple[tuple[float, ...], ...] = ((1.0, 0.5, 0.25), (0.5, 0.0, 1.0), (1.0, 1.0, 1.0), (0.2, 0.9, 1.0))


def check_harmonic_mean(fn: Callable[[Sequence[float]], Any]) -> None:
    """Exercise 06.2: `fn(values)` must give the harmonic mean of the ratings, and exactly 0 when one of them is 0."""
    for values in HARMONIC_CASES:
        want = harmonic_mean(values)
        try:
            got = as_float(call_learner(fn, values), "your function")
        except AssertionError as error:
            if isinstance(error.__cause__, ZeroDivisionError):
                raise AssertionError(f"{values}: 1 / 0 on the zero rating; one rating is 0, so the score is 0: "
                                     "return 0.0 before dividing") from None
            raise
        if 0 in values and got != 0:
            raise AssertionError(f"{values}: one rating is 0, so the score must be 0 (got {got:.4f})")
        if abs(got - want) > 1e-9:
            arithmetic = sum(values) / len(values)
            hint = ("that is the arithmetic mean: n / sum(1 / v)" if abs(got - arithmetic) < 1e-9 else
                    "that is 1 / the harmonic mean: n / sum(1 / v), not sum(1 / v) / n"
                    if abs(got * want - 1) < 1e-9 else "n / sum(1 / v)")
            raise AssertionError(f"{values}: expected {want:.4f}, got {got:.4f}: {hint}")
    print(f"correct: your harmonic mean matches steering_eval.harmonic_mean on {len(HARMONIC_CASES)} cases, one with "
          "a zero rating")


def _steered() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 2
    lens = torch.stack([torch.randperm(50, generator=g)[:5] for _ in range(6)])
    logits[0, lens[0, 3]] = 12.0   # the best lens token is not the first one, and it is the most likely token
    logits[1, lens[1, 4]] = 3.0
    return logits, lens


def check_output_score(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
    """Exercise 06.3: `fn(steered_logits, lens_tokens)` (logits [n, vocab], the latent's top logit-lens token ids
    [n, m]) must give Arad et al.'s output score per row: among the m tokens take the one most likely after
    steering; score = (1 - rank / vocab) * its probability, rank 0 for the most likely token of the vocabulary."""
    logits, lens = _steered()
    want = output_score_from_logits(logits, lens)
    got = as_tensor(call_learner(fn, logits.clone(), lens.clone()), "your function")
    if got.shape != want.shape:
        raise AssertionError(f"shape {tuple(got.shape)}; expected one score per row, {tuple(want.shape)}")
    if _close(got, want):
        print(f"correct: your output score matches steering.output_score_from_logits on {len(logits)} rows "
              f"(vocabulary {logits.shape[1]}, {lens.shape[1]} logit-lens tokens each)")
        return
    probs = logits.softmax(-1)
    best = probs.gather(1, lens).max(1).values
    rank = (probs > best[:, None]).sum(1).double()
    vocab = logits.shape[1]
    first = probs.gather(1, lens[:, :1])[:, 0]
    wrong = {"that is the probability alone: multiply by (1 - rank / vocab)": best,
             "the rank factor is upside down: it is 1 - rank / vocab (1 for the most likely token)":
                 rank / vocab * best,
             "you scored the first logit-lens token: take the one ranked best after steering":
                 (1 - (probs > first[:, None]).sum(1).double() / vocab) * first,
             "that uses the logits, not the probabilities: softmax first":
                 (1 - rank / vocab) * logits.gather(1, lens).max(1).values,
             "you ranked from 1: rank 0 is the most likely token": (1 - (rank + 1) / vocab) * best}
    hint = next((h for h, v in wrong.items() if _close(got, v)), None)
    raise AssertionError(hint or f"got {got.tolist()}, expected {want.tolist()}")


__all__ = ["HARMONIC_CASES", "check_harmonic_mean", "check_output_score", "check_token_confidence"]
