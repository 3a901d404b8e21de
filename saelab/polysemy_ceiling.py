"""notebook 05: how much sense information is at a hook at all? A supervised probe on the raw hidden states.

PS-Eval asks whether an SAE's top latent separates a word's senses. If nothing at the hook separates them, no SAE can,
and a sweep over SAEs measures noise. The ceiling probe asks the question with labels: a ridge classifier on the pair
features [|h1 - h2|, h1 * h2] of the two contexts' standardised hidden states (at the template copy of the word),
cross-validated with the target lemmas grouped (a lemma's pairs never sit on both sides of a fold), scored by the
AUROC of its out-of-fold scores with a bootstrap interval over pairs. A verdict on SAEs at a hook is stated only
when the hook's ceiling clears `CEILING_LEVEL` (the lower end of its interval): declared before the run.

    ceiling = ceiling_probe(probe_acts, "blocks.9.hook_resid_post")
    ceiling.precondition()     # (ok, why) for saelab.stats.verdict
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from saelab.polysemy import ProbeActivations
from saelab.stats import Estimate, bootstrap_interval

#: declared before the run: an SAE verdict at a hook needs the raw-hidden-state ceiling AUROC's lower bound >= this
CEILING_LEVEL = 0.6
ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)  # ridge strengths chosen among by (efficient) leave-one-out CV


def auroc(labels: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of scores for label 1 against label 0 along `axis` (Mann-Whitney, ties counted half); NaN with one
    class. Vectorised, for `saelab.stats.bootstrap_interval`."""
    labels, scores = np.moveaxis(np.asarray(labels), axis, -1) == 1, np.moveaxis(np.asarray(scores, float), axis, -1)
    ranks = rankdata(scores, axis=-1)
    n1, n0 = labels.sum(-1), (~labels).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def pair_features(h: np.ndarray) -> np.ndarray:
    """[|h1 - h2|, h1 * h2] of pairs h [n_pairs, 2, d]: symmetric in the two contexts."""
    return np.concatenate([np.abs(h[:, 0] - h[:, 1]), h[:, 0] * h[:, 1]], axis=1)


@dataclass
class Ceiling:
    """The ceiling probe's result at one hook: cross-validated AUROC (with its interval) and out-of-fold scores."""

    hook: str
    auroc: Estimate
    scores: np.ndarray = field(repr=False)
    n_pairs: int
    folds: int
    level: float = CEILING_LEVEL

    @property
    def clears(self) -> bool:
        return bool(self.auroc.low >= self.level)

    def precondition(self) -> tuple[bool, str]:
        """(ok, why) for `saelab.stats.verdict`'s preconditions."""
        if self.clears:
            return True, ""
        return False, f"raw-hidden-state probe AUROC {self.auroc}, not clear of {self.level:g}"


def _groups(probe_acts: ProbeActivations) -> np.ndarray:
    return np.array([p.lemma or p.word.lower() for p in probe_acts.probe.pairs])


def ceiling_probe(probe_acts: ProbeActivations, hook: str, *, read: str = "template", folds: int = 5,
                  alphas: Sequence[float] = ALPHAS, level: float = CEILING_LEVEL, n_boot: int = 2000,
                  seed: int = 0) -> Ceiling:
    """Cross-validated ridge probe of same / different sense on the pair features of the hook's hidden states.

    Each fold standardises the units on its training pairs only, then fits `RidgeClassifierCV` (its strength chosen
    among `alphas` on those pairs); folds group pairs by target lemma and keep the labels balanced
    (`StratifiedGroupKFold`). The AUROC pools the out-of-fold scores (folds' score scales differ a little, which can
    only lower it).
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = probe_acts.probe.labels, _groups(probe_acts)
    n_groups = min(len(set(groups[labels == c])) for c in (0, 1)) if len(set(labels.tolist())) == 2 else 0
    if n_groups < 2:
        raise ValueError("The ceiling probe needs same- and different-sense pairs of at least two target words each.")
    h = probe_acts.pair_acts(hook, read).double().numpy()
    scores = np.zeros(len(labels))
    splitter = StratifiedGroupKFold(min(folds, n_groups), shuffle=True, random_state=seed)
    for train, test in splitter.split(h, labels, groups):
        rows = h[train].reshape(-1, h.shape[-1])
        std = rows.std(0)
        z = (h - rows.mean(0)) / np.where(std > 0, std, 1.0)
        X = pair_features(z)
        mu, sd = X[train].mean(0), X[train].std(0)
        X = (X - mu) / np.where(sd > 0, sd, 1.0)
        model = RidgeClassifierCV(alphas=list(alphas)).fit(X[train], labels[train])
        scores[test] = model.decision_function(X[test])
    est = bootstrap_interval(auroc, labels, scores, n_resamples=n_boot, seed=seed)
    return Ceiling(hook, est, scores, len(labels), splitter.get_n_splits(), level)


def ceilings(probe_acts: ProbeActivations, hooks: Iterable[str], **options) -> dict[str, Ceiling]:
    """`ceiling_probe` at each hook."""
    return {hook: ceiling_probe(probe_acts, hook, **options) for hook in hooks}


def ceiling_preconditions(found: Mapping[str, Ceiling], hooks: Iterable[str]) -> dict[str, tuple[bool, str]]:
    """The preconditions of a claim about SAEs at `hooks`: each hook's ceiling clears its level."""
    return {f"ceiling at {hook}": found[hook].precondition() for hook in sorted(set(hooks))}


def ceiling_table(found: Mapping[str, Ceiling]):
    """One row per hook: ceiling AUROC, its interval, pairs, folds and whether it clears the level (pandas)."""
    import pandas as pd

    return pd.DataFrame([{"hook": c.hook, "ceiling AUROC": c.auroc.value, "low": c.auroc.low, "high": c.auroc.high,
                          "pairs": c.n_pairs, "folds": c.folds, f"clears {c.level:g}": c.clears}
                         for c in found.values()]).set_index("hook")


__all__ = ["ALPHAS", "CEILING_LEVEL", "Ceiling", "auroc", "ceiling_preconditions", "ceiling_probe", "ceiling_table",
           "ceilings", "pair_features"]
