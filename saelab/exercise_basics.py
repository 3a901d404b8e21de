"""Checks for the exercises of notebooks 00-02 (hooks and KL, pooling and massive dimensions, SAE metrics), and
the helper every check uses to call a learner's function.

Each check compares the learner's function with a reference on inputs built to expose the typical mistakes; when
they differ it raises an `AssertionError` whose message names the likely mistake. A learner's function that still
raises `NotImplementedError` (the exercise version's stub) lets it through unchanged; any other exception becomes
an `AssertionError` that says what went wrong, so a check never ends in a bare traceback from inside itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from saelab.zoo_catalog import block_at, resid_post


def call_learner(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, with the learner's own exceptions turned into a readable `AssertionError`.

    `NotImplementedError` passes through: it means the exercise is not written yet."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # any learner error becomes a hint
        name = getattr(fn, "__name__", "your function")
        raise AssertionError(f"{name} raised {type(error).__name__}: {error}") from error


def as_tensor(value: Any, what: str) -> torch.Tensor:
    if value is None:
        raise AssertionError(f"{what} returned None: did you forget `return`?")
    if not isinstance(value, torch.Tensor):
        try:
            return torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise AssertionError(f"{what} returned {type(value).__name__}; expected a tensor") from None
    return value


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=tol, rtol=tol)


def as_float(value: Any, what: str) -> float:
    if value is None:
        raise AssertionError(f"{what} returned None: did you forget `return`?")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what} returned {value!r}; expected one number") from None


# ----------------------------------------------------------------------------------------------------------------
# Notebook 00
# ----------------------------------------------------------------------------------------------------------------

def _kl_logits(clean: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    log_p, log_q = clean.log_softmax(-1), edited.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def check_kl_divergence(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 00.2: `fn(clean_logits, edited_logits)` must give KL(clean || edited) in nats over the last
    dimension, for a batch of logits that includes a token whose probability underflows to 0 in float32."""
    g = torch.Generator().manual_seed(0)
    clean, edited = torch.randn(4, 50, generator=g) * 3, torch.randn(4, 50, generator=g) * 3
    clean[0, 7] = edited[0, 7] = -200.0  # exp(-200) is 0 in float32: prob.log() gives -inf, 0 * -inf = nan
    expected = _kl_logits(clean, edited)
    mine = as_tensor(call_learner(fn, clean.clone(), edited.clone()), "your function")
    if mine.shape != expected.shape:
        raise AssertionError(f"shape {tuple(mine.shape)}; expected one KL per row, {tuple(expected.shape)}: "
                             "sum over the last dimension (the vocabulary)")
    if torch.isnan(mine).any():
        raise AssertionError("NaN: a probability underflowed to 0 and 0 * log(0) is nan; take log_softmax of the "
                             "logits instead of the log of softmax")
    if _close(mine, expected):
        print(f"correct: KL(clean || edited) matches on {len(clean)} rows, including one with an underflowing token")
        return
    wrong = {"you computed KL(edited || clean): the clean distribution weights the sum": _kl_logits(edited, clean),
             "that is in bits (log base 2); the workbook reports nats (natural log)": expected / math.log(2),
             "the logits went in without a softmax: turn them into log-probabilities first":
                 (clean * (clean - edited)).sum(-1)}
    for hint, value in wrong.items():
        if _close(mine, value):
            raise AssertionError(hint)
    raise AssertionError(f"got {mine[:2].tolist()}, expected {expected[:2].tolist()}: "
                         "KL(p || q) = sum_v p(v) (log p(v) - log q(v))")


def _norm_ratio_through_model(fn: Callable, model, tokens: torch.Tensor, alpha: float) -> float:

    block = block_at(model, 0.17)
    name, seen = resid_post(block), {}

    def record(activation, hook):  # runs after the learner's hook and sees what flows on
        seen["norm"] = activation.norm(dim=-1)

    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=block + 1)
        with model.hooks(fwd_hooks=[(name, functools.partial(fn, alpha=alpha)), (name, record)]):
            call_learner(model, tokens, stop_at_layer=block + 1)
    return (seen["norm"] / cache[name].norm(dim=-1)).mean().item()


def check_scale_hook(fn: Callable, model=None, tokens: torch.Tensor | None = None) -> None:
    """Exercise 00.3: `fn(activation, hook, alpha)` must return `alpha * activation`; with `model` and `tokens`,
    the check also runs it inside the model at an early block's resid_post and measures the norm there."""
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
    for alpha in (2.0, 0.5, -1.0):
        mine = call_learner(fn, x.clone(), None, alpha=alpha)
        if mine is None:
            raise AssertionError("your hook returned None: return the scaled tensor (a hook's return value replaces "
                                 "the activation)")
        mine = as_tensor(mine, "your hook")
        if _close(mine, alpha * x):
            continue
        hints = {"you added alpha; multiply by it": x + alpha, "you scaled by alpha twice": alpha ** 2 * x,
                 "the activation came back unchanged: return alpha * activation": x}
        hint = next((h for h, v in hints.items() if _close(mine, v)), "return alpha * activation, same shape")
        raise AssertionError(f"alpha={alpha}: {hint}")
    if model is not None:
        ratio = _norm_ratio_through_model(fn, model, tokens, alpha=2.0)
        if abs(ratio - 2.0) > 2e-3:
            raise AssertionError(f"inside the model the norm changed by {ratio:.3f}, not 2.0")
        print(f"correct: inside the model the residual-stream norm is {ratio:.3f}x the clean one (alpha = 2)")
    else:
        print("correct: your hook returns alpha * activation for alpha = 2, 0.5 and -1")


def check_bos_norm_ratio(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Exercise 00.1: `fn(norms)` with norms [layer, position] (position 0 is BOS) must give, per layer, the BOS norm
    divided by the mean norm of the other positions."""
    g = torch.Generator().manual_seed(0)
    norms = torch.rand(6, 9, generator=g) * 10 + 5
    norms[:, 0] = torch.linspace(30, 3000, 6)
    expected = norms[:, 0] / norms[:, 1:].mean(1)
    mine = as_tensor(call_learner(fn, norms.clone()), "your function")
    if mine.shape != expected.shape:
        raise AssertionError(f"shape {tuple(mine.shape)}; expected one ratio per layer, {tuple(expected.shape)}")
    if _close(mine, expected):
        print(f"correct: BOS / other-token norm ratios from {expected.min():.1f} to {expected.max():.1f} on a test "
              "grid")
        return
    wrong = {"the mean included BOS itself: average positions 1: only": norms[:, 0] / norms.mean(1),
             "the ratio is upside down: BOS norm over the others' mean": 1 / expected,
             "that is a median: use the mean of the other positions": norms[:, 0] / norms[:, 1:].median(1).values,
             "you averaged over layers (dim 0); average over positions (dim 1)": norms[:, 0] / norms[1:].mean()}
    for hint, value in wrong.items():
        if _close(mine, value):
            raise AssertionError(hint)
    raise AssertionError("per layer: norms[l, 0] / mean of norms[l, 1:]")


# ----------------------------------------------------------------------------------------------------------------
# Notebook 01
# ----------------------------------------------------------------------------------------------------------------

def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Activations [3 texts, 6 positions, 4] and a mask of real tokens: text 0 right-padded, text 1 left-padded,
    text 2 full; BOS (the first real position) is masked out; padding holds large junk values."""
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 6, 4, generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    acts[~mask] += 50.0
    return acts, mask


def check_masked_mean(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 01.1: `fn(acts, mask)` (acts [text, position, d], mask [text, position], True on real tokens) must
    give each text's mean over its real tokens, [text, d]."""
    acts, mask = _padded_batch()
    m = mask.unsqueeze(-1).float()
    expected = (acts * m).sum(1) / m.sum(1)
    mine = as_tensor(call_learner(fn, acts.clone(), mask.clone()), "your function")
    if _close(mine, expected):
        print("correct: mean over real tokens only, for right-padded, left-padded and full texts")
        return
    if mine.shape != expected.shape:
        raise AssertionError(f"shape {tuple(mine.shape)}; expected [text, d] = {tuple(expected.shape)}: average "
                             "over positions (dim 1)")
    wrong = {"padding and BOS went into the mean: multiply by the mask before summing": acts.mean(1),
             "you summed the real tokens but divided by every position: divide by mask.sum(1)":
                 (acts * m).sum(1) / acts.shape[1],
             "that is a sum: divide by the number of real tokens": (acts * m).sum(1)}
    for hint, value in wrong.items():
        if _close(mine, value):
            raise AssertionError(hint)
    raise AssertionError("sum acts * mask over positions, then divide by each text's number of real tokens")


def check_last_token(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Exercise 01.2: `fn(acts, mask)` must give each text's vector at its last real token, [text, d], whichever
    side the padding is on."""
    acts, mask = _padded_batch()
    positions = torch.arange(mask.shape[1])
    last = (positions * mask).argmax(1)
    expected = acts[torch.arange(len(acts)), last]
    mine = as_tensor(call_learner(fn, acts.clone(), mask.clone()), "your function")
    if _close(mine, expected):
        print("correct: the last real token of right-padded, left-padded and full texts")
        return
    if _close(mine, acts[:, -1]):
        raise AssertionError("position -1 is padding in a right-padded text: find the last position where mask "
                             "is True")
    count = mask.sum(1)
    if mine.shape == expected.shape and _close(mine, acts[torch.arange(len(acts)), (count - 1).clamp(min=0)]):
        raise AssertionError("mask.sum(1) - 1 counts real tokens; it is not their last index when the text is "
                             "left-padded or BOS is masked: use the largest index where mask is True")
    raise AssertionError("for each text take acts[i, j] with j the largest position where mask[i, j] is True")


def check_massive_dims(fn: Callable[[torch.Tensor, int], Any]) -> None:
    """Exercise 01.3: `fn(X, n)` (X [vectors, d]) must return the n dimensions with the largest mean absolute value,
    largest first."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 32, generator=g)
    X[:, 5] = -40 + 0.1 * torch.randn(200, generator=g)   # massive, negative, nearly constant
    X[:, 11] = 25 + 0.1 * torch.randn(200, generator=g)   # massive, positive
    X[:, 20] = 12 * torch.randn(200, generator=g)         # high variance, mean near 0
    expected = X.abs().mean(0).argsort(descending=True)[:2].tolist()
    mine = call_learner(fn, X.clone(), 2)
    mine = [int(i) for i in as_tensor(mine, "your function").flatten().tolist()]
    if mine == expected:
        sizes = [round(float(X[:, d].abs().mean()), 1) for d in expected]
        print(f"correct: dimensions {expected} (mean |value| {sizes})")
        return
    if set(mine) == set(expected):
        raise AssertionError(f"right dimensions, wrong order {mine}: sort by mean |value|, largest first")
    if mine == X.mean(0).argsort(descending=True)[:2].tolist():
        raise AssertionError("you ranked by the signed mean: a large negative dimension is massive too; take abs() "
                             "first")
    if mine == X.std(0).argsort(descending=True)[:2].tolist() or 20 in mine:
        raise AssertionError("you ranked by spread: a massive dimension can be nearly constant; rank by mean "
                             "|value|")
    raise AssertionError(f"got {mine}, expected {expected}: X.abs().mean(0), then the n largest")


def check_standardised_cosine(fn: Callable[..., torch.Tensor]) -> None:
    """Exercise 01.4: `fn(a, b, mean, std)` (rows of a and b are vectors; mean and std per dimension, from a
    reference set) must give the row-wise cosine of the standardised vectors (a - mean) / std and (b - mean) / std."""
    g = torch.Generator().manual_seed(0)
    scale = torch.ones(16)
    scale[3] = 300.0
    offset = torch.zeros(16)
    offset[3] = 2000.0
    a, b = (torch.randn(10, 16, generator=g) * scale + offset for _ in range(2))
    ref = torch.randn(100, 16, generator=g) * scale + offset
    mean, std = ref.mean(0), ref.std(0)
    expected = F.cosine_similarity((a - mean) / std, (b - mean) / std, dim=-1)
    mine = as_tensor(call_learner(fn, a.clone(), b.clone(), mean, std), "your function")
    if _close(mine, expected, 1e-3):
        print(f"correct: standardised cosines match on {len(a)} pairs (raw cosines there: "
              f"{F.cosine_similarity(a, b, dim=-1).mean():.3f} on average)")
        return
    wrong = {"that is the raw cosine: subtract the mean and divide by the std first": F.cosine_similarity(a, b, dim=-1),
             "centred but not scaled: divide by std too, or the massive dimension still dominates":
                 F.cosine_similarity(a - mean, b - mean, dim=-1),
             "scaled but not centred: subtract the mean before dividing by std":
                 F.cosine_similarity(a / std, b / std, dim=-1),
             "that is a dot product: normalise both vectors (cosine)":
                 (((a - mean) / std) * ((b - mean) / std)).sum(-1)}
    for hint, value in wrong.items():
        if _close(mine, value, 1e-3):
            raise AssertionError(hint)
    raise AssertionError("cosine_similarity((a - mean) / std, (b - mean) / std, dim=-1), one value per row")


# ----------------------------------------------------------------------------------------------------------------
# Notebook 02
# ----------------------------------------------------------------------------------------------------------------

def check_explained_variance(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
    """Exercise 02.2: `fn(x, x_hat)` must give 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (one number)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g) * torch.linspace(0.5, 4, 8) + 10.0   # a large mean, as a residual has
    x_hat = x + 0.6 * torch.randn(300, 8, generator=g)
    sse = ((x - x_hat) ** 2).sum()
    expected = float(1 - sse / ((x - x.mean(0)) ** 2).sum())
    mine = as_float(call_learner(fn, x.clone(), x_hat.clone()), "your function")
    if abs(mine - expected) < 1e-4:
        print(f"correct: explained variance {mine:.4f}")
        return
    wrong = {"the denominator is not centred: subtract the mean of x (over tokens) before squaring":
                 1 - sse / (x ** 2).sum(),
             "that is the unexplained share, sum ||x - x_hat||^2 / total variance: subtract it from 1":
                 sse / ((x - x.mean(0)) ** 2).sum(),
             "you averaged per-dimension explained variances; pool the squared errors over all dimensions first":
                 (1 - ((x - x_hat) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)).mean()}
    for hint, value in wrong.items():
        if abs(mine - float(value)) < 1e-4:
            raise AssertionError(hint)
    raise AssertionError(f"got {mine:.4f}, expected {expected:.4f}")


def check_frac_alive(fn: Callable, sae, x: torch.Tensor) -> None:
    """Exercise 02.4: `fn(sae, x)` must give the share of the SAE's latents that are non-zero on at least one of the
    tokens x."""
    with torch.no_grad():
        z = sae.encode(x)
    expected = (z != 0).any(0).float().mean().item()
    mine = as_float(call_learner(fn, sae, x), "your function")
    if abs(mine - expected) < 1e-6:
        print(f"correct: {mine:.3f} of the {z.shape[1]} latents fire on at least one of {len(x):,} tokens")
        return
    if not 0 <= mine <= 1:
        raise AssertionError(f"got {mine}: a share of latents lies between 0 and 1 (did you count tokens or "
                             "latents instead of dividing?)")
    if abs(mine - (z > 0).float().mean().item()) < 1e-6:
        raise AssertionError("that is the share of (token, latent) pairs that fire (a density), not the share of "
                             "latents that fire at least once: reduce over tokens (dim 0) with any()")
    if abs(mine - (z != 0).any(1).float().mean().item()) < 1e-6:
        raise AssertionError("that is the share of tokens with an active latent: reduce over tokens (dim 0), not "
                             "over latents")
    raise AssertionError(f"{mine:.4f} vs {expected:.4f}: a latent is alive if it is non-zero on at least one token")


def check_ce_loss_score(fn: Callable[[float, float, float], Any]) -> None:
    """Exercise 02.3: `fn(ce_clean, ce_sae, ce_zero)` must give (ce_zero - ce_sae) / (ce_zero - ce_clean)."""
    cases = [(2.0, 2.0, 7.5), (3.1, 3.4, 9.0), (4.0, 8.0, 6.0)]
    for clean, with_sae, zero in cases:
        expected = (zero - with_sae) / (zero - clean)
        mine = as_float(call_learner(fn, clean, with_sae, zero), "your function")
        if abs(mine - expected) < 1e-6:
            continue
        wrong = {"that is 1 - the score (the share of the loss gap the SAE *loses*): measure from the zero-ablation "
                 "end": (with_sae - clean) / (zero - clean),
                 "the denominator is the whole gap, ce_zero - ce_clean": (zero - with_sae) / zero,
                 "the sign is flipped: the score is 1 when the SAE is as good as the clean run":
                     -expected}
        hint = next((h for h, v in wrong.items() if abs(mine - v) < 1e-6), "(ce_zero - ce_sae) / (ce_zero - ce_clean)")
        raise AssertionError(f"ce_clean={clean}, ce_sae={with_sae}, ce_zero={zero}: got {mine:.4f}, expected "
                             f"{expected:.4f}; {hint}")
    print(f"correct on {len(cases)} cases, including an SAE worse than zero-ablation (a negative score)")


__all__ = ["as_float", "as_tensor", "call_learner", "check_bos_norm_ratio", "check_ce_loss_score",
           "check_explained_variance",
           "check_frac_alive", "check_kl_divergence", "check_last_token", "check_massive_dims", "check_masked_mean",
           "check_scale_hook", "check_standardised_cosine"]
