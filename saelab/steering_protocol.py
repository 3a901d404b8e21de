"""notebook 06: the comparison protocol of the selection methods and its verdicts (issue 14).

Each SAE offers four arms of latents from one random pool: `random` (no selection), the top `output score`
latents, and the two tiers of Delta Token Confidence, `Delta C up` (most positive) and `Delta C down` (most
negative). Every arm's latents go through AxBench's protocol (`steering_eval.evaluate_steering`: alpha chosen on a
seeded half of the prompts, scored on the other half). The Delta Token Confidence *method* then keeps, per SAE,
the tier whose latents score better on the **selection half** only (`pick_tiers`), so the held-out scores that
decide the comparison never chose anything.

Methods are compared on paired cells (`method_matrix`): one cell per (SAE, held-out prompt), holding the mean
held-out score of the method's latents there. `compare_methods` bootstraps the cells with
`saelab.stats.paired_difference` and judges each claim by `saelab.stats.verdict`, Holm-corrected as one family.

    arms = choose_arms(pool, output_scores, delta_c, n=5)
    frame = held_out_frame(se.evaluate_steering(model, targets, prompts, alphas, judge))
    methods, tiers = pick_tiers(frame)
    verdicts = compare_methods(methods, preconditions={"judge validated": (ok, why)})

Rank agreement (Kendall's tau-b across SAEs) is descriptive here: `tau_estimates` gives each method's tau-b with a
bootstrap interval over SAEs, and `tau_verdicts` states that the paper's tau-b claims are not testable unless the
number of SAEs could tell tau-b 0.30 from 0 (its minimum detectable effect under the null, declared by design).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from saelab import stats, zoo
from saelab.steering_eval import kendall_tau_b

RANDOM, OUTPUT, DTC = "random", "output score", "Delta Token Confidence"
UP, DOWN = "Delta C up", "Delta C down"
ARMS = (RANDOM, OUTPUT, UP, DOWN)
METHODS = (RANDOM, OUTPUT, DTC)
#: the paper's numbers (Gemma-2-2B; methods.md section 4)
PAPER_TAU = 0.298
PAPER_NUMBERS = {"M1": "0.328 vs 0.233 (Gemma-2-2B)", "M2": "0.233 vs 0.133 (Gemma-2-2B)",
                 "M3": "0.328 vs 0.133 (Gemma-2-2B)", "T1": "τb ≈ 0.30", "T2": "τb ≈ 0 after ΔC selection"}
#: declared before the run: "tau-b is about 0 after Delta C selection" holds only inside +-TAU_MARGIN
TAU_MARGIN = 0.15
SMOKE_BANNER = ("SMOKE RUN: these numbers come from smoke-size SAEs, a few latents and short generations. They "
                "test the code, they are not findings; every verdict below says so.")


# ------------------------------------------------------------------------------------------------------------------
# The arms and the held-out frame
# ------------------------------------------------------------------------------------------------------------------


def tier(pool: Sequence[int], scores, n: int, sign: int) -> list[int]:
    """The `n` latents of `pool` with the largest scores of one sign (+1: most positive first; -1: most negative
    first); fewer when fewer scores have that sign. NaN scores are never chosen."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}.")
    values = np.asarray(torch.as_tensor(scores, dtype=torch.float64), dtype=float) * sign
    if len(values) != len(pool):
        raise ValueError(f"{len(pool)} latents but {len(values)} scores: give one score per latent.")
    order = [i for i in np.argsort(-values, kind="stable") if np.isfinite(values[i]) and values[i] > 0]
    return [int(pool[i]) for i in order[:n]]


def choose_arms(pool: Sequence[int], output_scores, delta_c, n: int) -> dict[str, list[int]]:
    """The latents of each arm from one pool (already in random order): the first `n` (random), the top `n` by
    output score, and the top `n` of each Delta C tier."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: the number of latents per arm must be a positive integer.")
    out = np.asarray(torch.as_tensor(output_scores, dtype=torch.float64), dtype=float)
    keep = [i for i in np.argsort(-out, kind="stable") if np.isfinite(out[i])]
    return {RANDOM: [int(j) for j in pool[:n]], OUTPUT: [int(pool[i]) for i in keep[:n]],
            UP: tier(pool, delta_c, n, 1), DOWN: tier(pool, delta_c, n, -1)}


def held_out_frame(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`evaluate_steering`'s results as one row per (SAE label, arm, latent, held-out prompt): score, the latent's
    chosen alpha and its best selection-half mean (`selection_best`)."""
    rows = [{"sae": r["label"], "arm": r["group"], "latent": r["latent"], "prompt": p, "score": s,
             "alpha": r["alpha"], "selection_best": r["selection_best"]}
            for r in results for p, s in r["held_out"].items()]
    if not rows:
        raise ValueError("No held-out scores: evaluate_steering returned no results.")
    return pd.DataFrame(rows)


def pick_tiers(frame: pd.DataFrame, tiers: Sequence[str] = (UP, DOWN), method: str = DTC
               ) -> tuple[pd.DataFrame, pd.Series]:
    """Per SAE, the tier of `tiers` whose latents have the higher mean selection-half score (first on ties); its
    rows become `method`. Returns (frame with a "method" column: every other arm is its own method, the tiers are
    replaced by the chosen one) and the chosen tier per SAE."""
    missing = [c for c in ("sae", "arm", "latent", "prompt", "score", "selection_best") if c not in frame]
    if missing:
        raise ValueError(f"The frame lacks columns {missing}: build it with held_out_frame.")
    per_latent = frame.drop_duplicates(["sae", "arm", "latent"])
    chosen = {}
    for sae, group in per_latent[per_latent.arm.isin(tiers)].groupby("sae", sort=False):
        means = group.groupby("arm")["selection_best"].mean()
        chosen[sae] = max((t for t in tiers if t in means), key=lambda t: means[t])  # max keeps the first on ties
    others = frame[~frame.arm.isin(tiers)].assign(method=lambda f: f.arm)
    picked = frame[frame.apply(lambda r: chosen.get(r.sae) == r.arm, axis=1)].assign(method=method)
    return pd.concat([others, picked], ignore_index=True), pd.Series(chosen, name="tier", dtype=object)


def method_matrix(methods: pd.DataFrame) -> pd.DataFrame:
    """The paired cells: one row per (SAE, held-out prompt), one column per method, the mean held-out score of the
    method's latents there. Rows where a method has no latent are dropped (they cannot be paired)."""
    table = methods.pivot_table(index=["sae", "prompt"], columns="method", values="score", aggfunc="mean")
    return table[[m for m in METHODS if m in table.columns] + [m for m in table.columns if m not in METHODS]].dropna()


# ------------------------------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------------------------------


COMPARISONS = {"M1: Delta Token Confidence selection steers better than output-score selection": (DTC, OUTPUT),
               "M2: output-score selection steers better than no selection (random)": (OUTPUT, RANDOM),
               "M3: Delta Token Confidence selection steers better than no selection (random)": (DTC, RANDOM)}


def compare_methods(methods: pd.DataFrame, *, preconditions: Mapping[str, Any] | None = None, n_boot: int = 2000,
                    seed: int = 0, level: float = 0.95) -> list[stats.Verdict]:
    """M1-M3 (`COMPARISONS`): the mean paired difference of held-out steering scores over (SAE, prompt) cells, by
    `saelab.stats.paired_difference` and `verdict` ("greater"), Holm-corrected as one family. `preconditions`
    (e.g. the judge's known-answer checks) make every claim not testable when one fails. Each verdict rests on the
    SAEs of `methods`' "sae" column."""
    cells = method_matrix(methods)
    if len(cells) < 2:
        raise ValueError(f"Only {len(cells)} paired (SAE, prompt) cells: every method needs latents in the same "
                         "SAEs and at least two held-out prompts.")
    out, saes = [], tuple(dict.fromkeys(cells.index.get_level_values("sae")))
    for claim, (a, b) in COMPARISONS.items():
        est = stats.paired_difference(np.mean, cells[a].to_numpy(), cells[b].to_numpy(), n_resamples=n_boot,
                                      seed=seed, level=level)
        out.append(stats.verdict(est, direction="greater", claim=claim, preconditions=preconditions,
                                 rests_on=saes))
    return stats.verdicts_with_holm(out)


def tau_null_mde(n: int, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest tau-b that `n` SAEs detect (normal approximation under the null, no ties): MDE = (z + z_power)
    * sqrt(2 (2n + 5) / (9 n (n - 1))). About 0.61 at n = 12: tau-b 0.30 and 0 cannot be told apart."""
    if n < 2:
        return math.inf
    return stats.minimum_detectable_effect(math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))), level=level, power=power)


def tau_estimates(interp: Sequence[float], by_method: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                  level: float = 0.95) -> dict[str, stats.Estimate]:
    """Kendall's tau-b between interpretability and each method's mean steering score across SAEs (rows of
    `by_method`, in the order of `interp`), with a percentile bootstrap interval over SAEs."""
    x = np.asarray(interp, dtype=float)
    if len(x) != len(by_method):
        raise ValueError(f"{len(x)} interpretability values for {len(by_method)} SAEs.")
    return {m: stats.bootstrap_interval(kendall_tau_b, x, by_method[m].to_numpy(float), n_resamples=n_boot,
                                        seed=seed, level=level) for m in by_method.columns}


def tau_verdicts(taus: Mapping[str, stats.Estimate], *, margin: float = TAU_MARGIN,
                 rests_on: Sequence[Any] = ()) -> list[stats.Verdict]:
    """T1 (tau-b > 0 with no selection) and T2 (tau-b within +-margin of 0 after Delta C selection). Both are not
    testable, and reported descriptively, while the number of SAEs cannot tell the paper's 0.30 from 0
    (`tau_null_mde` above 0.30). `rests_on`: the SAEs the tau-b runs over (for the quality gate)."""
    out = []
    for claim, method, kw in (("T1: interpretability and steering agree weakly (tau-b > 0, no selection)", RANDOM,
                               {"direction": "greater"}),
                              ("T2: after Delta Token Confidence selection tau-b is about 0", DTC,
                               {"direction": "equivalent", "margin": margin})):
        est = taus[method]
        mde = tau_null_mde(est.n if isinstance(est.n, int) else min(est.n), est.level)
        enough = (mde <= PAPER_TAU, f"{est.n} SAEs detect tau-b only above {mde:.2f} (null SE), above the paper's "
                                    f"{PAPER_TAU}: descriptive only")
        out.append(stats.verdict(est, claim=claim, preconditions={"enough SAEs": enough}, rests_on=rests_on, **kw))
    return out


def verdict_table(verdicts: Sequence[stats.Verdict], saes, *, smoke: bool) -> pd.DataFrame:
    """`zoo.verdict_table` with the papers' numbers (keyed by the claim's id before its colon) and this banner."""
    return zoo.verdict_table(verdicts, saes, smoke=smoke, paper_numbers=PAPER_NUMBERS, banner=SMOKE_BANNER,
                             claim_id=lambda claim: claim.split(":")[0], signed=True)


__all__ = ["ARMS", "COMPARISONS", "DOWN", "DTC", "METHODS", "OUTPUT", "PAPER_NUMBERS", "PAPER_TAU", "RANDOM",
           "SMOKE_BANNER", "TAU_MARGIN", "UP", "choose_arms", "compare_methods", "held_out_frame", "method_matrix",
           "pick_tiers", "tau_estimates", "tau_null_mde", "tau_verdicts", "tier", "verdict_table"]
