"""One verdict rule for every notebook's claims: paired bootstrap intervals, Holm's correction and the MDE.

A claim is *held* when its confidence interval supports it, *contradicted* when the interval supports the opposite,
*inconclusive* otherwise, and *not testable* when a stated precondition fails (an SAE below its quality gate, a task
at ceiling, a threshold borrowed from another data set). A "no difference" claim is held only inside a margin
declared before the run. The minimum detectable effect sits beside each verdict.

    est = stats.paired_difference(np.mean, sae_scores, baseline_scores)    # same items, resampled together
    v = stats.verdict(est, direction="greater", claim="SAE beats the baseline")
    stats.claims_table(stats.verdicts_with_holm([v, w]))                    # several claims of one notebook

Intervals come from `scipy.stats.bootstrap` (percentile, or "basic"), one result type (`Estimate`), one `level=`.
No BCa: these metrics' bootstrap distributions are often degenerate or partly undefined, where BCa fails.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import DegenerateDataWarning, norm
from scipy.stats import bootstrap as _scipy_bootstrap

OUTCOMES = ("held", "contradicted", "inconclusive", "not testable")
DIRECTIONS = ("greater", "less", "equivalent")
METHODS = ("percentile", "basic")
_RNG = "rng" if "rng" in inspect.signature(_scipy_bootstrap).parameters else "random_state"  # scipy < 1.15


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval at `level` and bootstrap standard error `se`; `n` items (one count
    per sample when unpaired), `n_resamples` on which the statistic was defined, whose values (`distribution`)
    give `p_value` and `at_level` (Holm's wider intervals)."""

    value: float
    low: float
    high: float
    level: float = 0.95
    se: float = math.nan
    n: int | tuple[int, ...] = 0
    n_resamples: int = 0
    method: str = "percentile"
    distribution: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def mde(self, power: float = 0.8) -> float:
        """The minimum detectable effect at this interval's level (see `minimum_detectable_effect`)."""
        return minimum_detectable_effect(self.se, level=self.level, power=power)

    def at_level(self, level: float) -> Estimate:
        """The same estimate with its interval recomputed at another level, from the stored resamples."""
        _check_level(level)
        if level == self.level:
            return self
        if self.distribution is None or not len(self.distribution):
            raise ValueError("This estimate carries no bootstrap distribution, so its interval cannot be recomputed "
                             "at another level; build it with saelab.stats.bootstrap_interval.")
        low, high = _interval(self.distribution, self.value, level, self.method)
        return replace(self, low=low, high=high, level=level)

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided bootstrap p-value of `value == null`: about the smallest 1 - level whose interval excludes null.

        2 * (resamples on the far side of null + 1) / (n_resamples + 1), capped at 1 (for the basic method, of the
        resamples reflected about `value`).
        """
        return min(_p_beyond(self, null, True), _p_beyond(self, null, False))


@dataclass(frozen=True)
class Verdict:
    """The verdict on one claim: `outcome` (one of OUTCOMES), the `reason` in words, and what it rests on."""

    claim: str
    outcome: str
    reason: str
    estimate: Estimate | None
    direction: str = "greater"
    null: float = 0.0
    margin: float | None = None
    mde: float = math.nan
    power: float = 0.8
    p_value: float = math.nan
    preconditions: tuple[tuple[str, bool, str], ...] = ()
    correction: str = ""
    #: the SAEs the claim's numbers come from (a notebook's keys for them); `zoo.gate_claims` gates the claim on
    #: these alone. Empty: on every SAE the notebook passes.
    rests_on: tuple[Any, ...] = ()

    @property
    def level(self) -> float:
        return self.estimate.level if self.estimate is not None else math.nan

    @property
    def test(self) -> str:
        """The claim as a condition on the statistic, e.g. "> 0", ">= -0.02 (non-inferiority)", "within 0 ± 0.05"."""
        if self.direction == "equivalent":
            return f"within {self.null:g} ± {self.margin:g}"
        sign = ">" if self.direction == "greater" else "<"
        if self.margin is None:
            return f"{sign} {self.null:g}"
        return f"{sign}= {_threshold(self.direction, self.null, self.margin):g} (non-inferiority)"

    def __str__(self) -> str:
        return f"{self.claim + ': ' if self.claim else ''}{self.outcome} ({self.estimate} {self.test}): {self.reason}"


def minimum_detectable_effect(se: float, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true effect a claim at this `level` detects with probability `power` (normal approximation):
    MDE = (z_{1 - alpha/2} + z_{power}) * SE, alpha = 1 - level, SE the bootstrap standard error (2.8 SE at 0.95
    and 0.8). Smaller effects will likely read "inconclusive"."""
    _check_level(level)
    _check_level(power, "power")
    return float((norm.ppf(1 - (1 - level) / 2) + norm.ppf(power)) * se)


def bootstrap_interval(statistic: Callable[..., Any], *samples: Any, paired: bool = True, level: float = 0.95,
                       n_resamples: int = 2000, seed: int = 0, method: str = "percentile",
                       vectorized: bool | None = None, batch: int | None = None) -> Estimate:
    """`statistic(*samples)` with a bootstrap interval from `scipy.stats.bootstrap`.

    Each sample is 1-D, one value per item. `paired=True` resamples the same item indices for every sample (a
    paired bootstrap over items: samples must be of one length); `paired=False` resamples each sample on its own.
    A statistic with an `axis` argument is called on [batch, n] resamples at once (`vectorized`, as in scipy).
    Resamples where the statistic is undefined (NaN, e.g. a metric with an empty denominator) are dropped and
    `n_resamples` on the result counts the rest. Degenerate data get a zero-width interval, never a warning or
    NaN: when every sample is constant (all its values identical) every resample equals the data, so the interval
    is [value, value] and the SE 0; a constant bootstrap distribution gives [d, d].
    """
    if not callable(statistic):
        raise TypeError(f"statistic must be a function of the samples, got {type(statistic).__name__}.")
    data = _as_samples(samples, paired)
    _check_level(level)
    _check_count(n_resamples, "n_resamples", 1)
    method = str(method).lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    vec = _accepts_axis(statistic) if vectorized is None else bool(vectorized)
    value = _scalar(statistic(*data, axis=-1) if vec else statistic(*data))
    n = len(data[0]) if paired or len(data) == 1 else tuple(len(s) for s in data)
    if all(np.all(s == s[0]) for s in data):
        return Estimate(value, value, value, level, 0.0, n, n_resamples, method, np.full(n_resamples, value))
    if batch is None:
        batch = max(1, min(n_resamples, 2_000_000 // max(len(s) for s in data)))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", DegenerateDataWarning)  # scipy's interval is recomputed below, NaNs dropped
        result = _scipy_bootstrap(data, statistic, n_resamples=n_resamples, batch=batch, vectorized=vec,
                                  paired=paired, axis=-1, confidence_level=level, method=method,
                                  **{_RNG: np.random.default_rng(seed)})
    dist = np.asarray(result.bootstrap_distribution, dtype=float)
    if dist.ndim != 1:
        raise ValueError(f"statistic must return one number per resample, got shape {dist.shape[:-1]} each.")
    finite = dist[np.isfinite(dist)]
    if not finite.size:
        return Estimate(value, math.nan, math.nan, level, math.nan, n, 0, method, finite)
    se = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    low, high = _interval(finite, value, level, method)
    return Estimate(value, low, high, level, se, n, int(finite.size), method, finite)


def paired_difference(statistic: Callable[..., Any], a: Any, b: Any, **options: Any) -> Estimate:
    """statistic(a) - statistic(b) on the same items, with a paired bootstrap (one set of resampled items for both).

    `a` and `b` are each one sample, or a tuple of samples passed to `statistic` as `statistic(*a)` (e.g. true
    labels and one system's predictions). `options` are `bootstrap_interval`'s (level, n_resamples, seed, ...).
    """
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    if len(a) != len(b):
        raise ValueError(f"a and b must hold the same number of samples for statistic, got {len(a)} and {len(b)}.")
    k = len(a)
    vec = _accepts_axis(statistic) if options.get("vectorized") is None else bool(options["vectorized"])
    options["vectorized"] = vec

    def difference(*s: Any, axis: int = -1) -> Any:  # scipy passes axis only when vec
        kw = {"axis": axis} if vec else {}
        return np.asarray(statistic(*s[:k], **kw), float) - np.asarray(statistic(*s[k:], **kw), float)

    return bootstrap_interval(difference, *a, *b, paired=True, **options)


def verdict(estimate: Estimate | None, *, direction: str = "greater", null: float = 0.0, margin: float | None = None,
            preconditions: Mapping[str, bool | tuple[bool, str]] | None = None, claim: str = "",
            power: float = 0.8, rests_on: Sequence[Any] = ()) -> Verdict:
    """The verdict on a claim about `estimate`, by the one rule.

    - "greater" / "less": held when the whole interval lies on the claimed side of `null`, contradicted when wholly
      on the other side, else inconclusive. With a `margin` it is a non-inferiority claim ("not worse than null by
      more than margin"), judged against null - margin ("greater") or null + margin ("less"); for "better by at
      least d" move `null` to d instead.
    - "equivalent" ("no difference"): `margin`, declared before the run, is required. Held when the interval lies
      inside [null - margin, null + margin], contradicted when wholly outside, else inconclusive. (The interval is
      the usual two-sided one, stricter than TOST's 1 - 2 alpha.)
    - `preconditions` maps a name to `ok` or `(ok, why)`; any failing one makes the claim "not testable", with its
      reason (`estimate` may then be None). So does an undefined interval.
    - `rests_on` names the SAEs behind the estimate, so that a quality gate touches only the claims they carry.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if margin is not None and not (isinstance(margin, (int, float, np.number)) and 0 < margin < math.inf):
        raise ValueError(f"margin must be a positive, finite number, got {margin!r}.")
    if direction == "equivalent" and margin is None:
        raise ValueError("An 'equivalent' (no difference) claim needs a margin declared before the run, e.g. "
                         "margin=0.02: without one, an interval that merely contains the null would read as held.")
    if not math.isfinite(null):
        raise ValueError(f"null must be a finite number, got {null!r}.")
    _check_level(power, "power")
    checks = _preconditions(preconditions)
    failed = [f"{name}: {why}" if why else name for name, ok, why in checks if not ok]
    if estimate is None and not failed:
        raise ValueError("verdict needs an estimate unless a precondition failed (then the claim is not testable).")
    mde, p = (estimate.mde(power), _claim_p_value(estimate, direction, null, margin)) if estimate else (math.nan,) * 2
    v = Verdict(claim, "not testable", "", estimate, direction, float(null), margin, mde, power, p, checks,
                rests_on=tuple(rests_on))
    if failed:
        return replace(v, reason="; ".join(failed))
    low, high = estimate.low, estimate.high
    if not (math.isfinite(low) and math.isfinite(high)):
        return replace(v, reason="the interval is undefined (the statistic was undefined on every resample)")
    if direction == "equivalent":
        lo, hi = null - margin, null + margin
        held, against, what = lo <= low and high <= hi, high < lo or low > hi, f"the margin [{lo:.3g}, {hi:.3g}]"
        says = {"held": "lies inside", "contradicted": "lies wholly outside", "inconclusive": "crosses an edge of"}
    else:
        t = _threshold(direction, null, margin)
        held, against = (low > t, high < t) if direction == "greater" else (high < t, low > t)
        side, what = ("lies above" if low > t else "lies below"), f"{t:g}"
        says = {"held": side, "contradicted": side, "inconclusive": "contains"}
    outcome = "held" if held else "contradicted" if against else "inconclusive"
    reason = f"the {estimate.level * 100:g}% interval [{low:.3g}, {high:.3g}] {says[outcome]} {what}"
    if outcome == "inconclusive" and math.isfinite(mde):
        reason += f"; effects smaller than the MDE {mde:.3g} were unlikely to be detected"
    return replace(v, outcome=outcome, reason=reason)


def holm_levels(m: int, level: float = 0.95) -> list[float]:
    """Holm's step-down levels for m claims: the claim ranked i-th (0-based, strongest first) gets 1 - alpha/(m - i)."""
    _check_level(level)
    _check_count(m, "m", 0)
    return [1 - (1 - level) / (m - i) for i in range(m)]


def verdicts_with_holm(verdicts: Sequence[Verdict], *, level: float | None = None) -> list[Verdict]:
    """The verdicts of one notebook's claims again, with Holm's correction applied to their intervals.

    The m testable claims are ranked by bootstrap p-value (`Verdict.p_value`: about the smallest 1 - level at which
    the claim's verdict is held or contradicted); the i-th gets its interval recomputed at `holm_levels(m,
    level)[i]` and its verdict by the same rule. Step-down: after the first inconclusive claim every later one is
    inconclusive too (its reason says why). Not-testable claims are kept as they are and not counted. `level`: the
    family's (default: the verdicts' own, which must agree). The order of `verdicts` is kept.
    """
    verdicts = list(verdicts)
    if not all(isinstance(v, Verdict) for v in verdicts):
        raise TypeError("verdicts_with_holm takes Verdicts from saelab.stats.verdict.")
    testable = [i for i, v in enumerate(verdicts) if v.outcome != "not testable"]
    if level is None:
        levels = {verdicts[i].level for i in testable}
        if len(levels) > 1:
            raise ValueError(f"The claims' intervals have different levels {sorted(levels)}; pass level=.")
        level = levels.pop() if levels else 0.95
    if any(not math.isfinite(verdicts[i].p_value) for i in testable):
        raise ValueError("Holm's correction needs each claim's bootstrap distribution (a p-value to rank it by); "
                         "build the estimates with saelab.stats.bootstrap_interval or paired_difference.")
    order = sorted(testable, key=lambda i: verdicts[i].p_value)
    out, stopped = list(verdicts), None
    for rank, (i, lv) in enumerate(zip(order, holm_levels(len(order), level))):
        v = verdicts[i]
        new = verdict(v.estimate.at_level(lv), direction=v.direction, null=v.null, margin=v.margin,
                      preconditions={name: (ok, why) for name, ok, why in v.preconditions}, claim=v.claim,
                      power=v.power, rests_on=v.rests_on)
        if stopped is not None:
            new = replace(new, outcome="inconclusive",
                          reason=f"Holm's step-down stopped at {stopped!r}; on its own, {new.reason}")
        elif new.outcome == "inconclusive":
            stopped = v.claim or f"claim {i}"
        out[i] = replace(new, correction=f"Holm {rank + 1}/{len(order)}")
    return out


def holm(p_values: Iterable[float] | Sequence[Verdict], *, level: float | None = None
         ) -> tuple[np.ndarray, np.ndarray] | list[Verdict]:
    """Holm-Bonferroni step-down for several claims of one notebook.

    Given p-values: (reject, adjusted p-values) in their order, as statsmodels' `multipletests(method="holm")`;
    alpha = 1 - level (default level 0.95). Given Verdicts: `verdicts_with_holm(verdicts, level=level)`.
    """
    items = list(p_values)
    if items and all(isinstance(v, Verdict) for v in items):
        return verdicts_with_holm(items, level=level)
    level = 0.95 if level is None else level
    _check_level(level)
    p = np.asarray(items, dtype=float)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"holm takes a list of p-values in [0, 1] (or Verdicts), got {items!r}.")
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(steps) if len(p) else steps
    return adjusted <= 1 - level, adjusted


def claims_table(verdicts: Iterable[Verdict]):
    """One row per claim (claim, test, value, interval, level, margin, MDE, verdict, reason, correction): pandas.
    When any verdict names the SAEs it rests on, a "rests on" column (tuples) follows, for `zoo.gate_claims`."""
    import pandas as pd

    verdicts = list(verdicts)
    columns = ["claim", "test", "value", "interval", "level", "margin", "MDE", "verdict", "reason", "correction"]
    table = pd.DataFrame([[v.claim, v.test, v.estimate.value if v.estimate else math.nan,
                           f"[{v.estimate.low:.3f}, {v.estimate.high:.3f}]" if v.estimate else "", v.level, v.margin,
                           v.mde, v.outcome, v.reason, v.correction] for v in verdicts], columns=columns)
    if any(v.rests_on for v in verdicts):
        table["rests on"] = [v.rests_on for v in verdicts]
    return table


def _check_level(level: Any, name: str = "level") -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.95), got {level!r}.")


def _check_count(x: Any, name: str, least: int) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < least:
        raise ValueError(f"{name} must be an integer of at least {least}, got {x!r}.")


def _as_samples(samples: Sequence[Any], paired: bool) -> list[np.ndarray]:
    if not samples:
        raise ValueError("Give at least one sample (one value per item) after the statistic.")
    data = [np.asarray(s) for s in samples]
    for k, s in enumerate(data):
        if s.ndim != 1 or s.dtype.kind not in "biuf" or len(s) < 2:
            raise ValueError(f"Sample {k} must be a 1-D numeric or boolean array of at least 2 items (one value per "
                             f"item), got shape {s.shape} and dtype {s.dtype}.")
    lengths = [len(s) for s in data]
    if paired and len(set(lengths)) > 1:
        raise ValueError(f"Paired samples need one value per item each, got lengths {lengths}; pass paired=False "
                         "for independent samples.")
    return data


def _accepts_axis(statistic: Callable[..., Any]) -> bool:
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return False


def _scalar(x: Any) -> float:
    arr = np.asarray(x, dtype=float)
    if arr.size != 1:
        raise ValueError(f"statistic must return one number for one set of samples, got shape {arr.shape}.")
    return float(arr.reshape(()))


def _interval(dist: np.ndarray, value: float, level: float, method: str) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = np.quantile(dist, [tail, 1 - tail])
    if method == "basic":
        low, high = 2 * value - high, 2 * value - low
    return float(low), float(high)


def _p_beyond(e: Estimate, t: float, above: bool) -> float:
    """About the smallest 1 - level at which the interval lies wholly above (below) t: 2 (k + 1) / (B + 1), where k
    counts resamples on the wrong side of t (reflected about the value for the basic method)."""
    d = e.distribution if e.distribution is not None else np.array([])
    d = 2 * e.value - d if e.method == "basic" else d
    k = np.sum(d <= t) if above else np.sum(d >= t)
    return float(min(1.0, 2 * (k + 1) / (len(d) + 1))) if len(d) else math.nan


def _claim_p_value(e: Estimate, direction: str, null: float, margin: float | None) -> float:
    """About the smallest 1 - level at which the claim's verdict would be decisive (held or contradicted)."""
    if direction == "equivalent":
        held = max(_p_beyond(e, null - margin, True), _p_beyond(e, null + margin, False))
        return min(held, _p_beyond(e, null - margin, False), _p_beyond(e, null + margin, True))
    t = _threshold(direction, null, margin)
    return min(_p_beyond(e, t, True), _p_beyond(e, t, False))


def _threshold(direction: str, null: float, margin: float | None) -> float:
    if margin is None:
        return null
    return null - margin if direction == "greater" else null + margin


def _preconditions(pre: Mapping[str, Any] | None) -> tuple[tuple[str, bool, str], ...]:
    if pre is None:
        return ()
    if not isinstance(pre, Mapping):
        raise TypeError("preconditions must map a name to ok or (ok, why), e.g. {'SAE quality gate': (False, "
                        "'explained variance 0.41 < 0.6')}.")
    checks = {name: (c if isinstance(c, tuple) and len(c) == 2 else (c, "")) for name, c in pre.items()}
    for name, (ok, _) in checks.items():
        if not isinstance(ok, (bool, np.bool_)):
            raise TypeError(f"precondition {name!r} must be ok or (ok, why) with ok a bool, got {pre[name]!r}.")
    return tuple((str(name), bool(ok), str(why)) for name, (ok, why) in checks.items())


__all__ = ["DIRECTIONS", "Estimate", "METHODS", "OUTCOMES", "Verdict", "bootstrap_interval", "claims_table", "holm",
           "holm_levels", "minimum_detectable_effect", "paired_difference", "verdict", "verdicts_with_holm"]
