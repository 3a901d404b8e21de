"""notebook 05: PS-Eval's claims by `saelab.stats`' one rule, and the notebook's tables and sweep figure.

Every claim is a paired bootstrap over pairs (the same resampled pairs for every SAE compared) on specificity:

    P1   deeper layers raise specificity                    deepest - shallowest readable > 0
    P2a  attention output raises specificity over the residual stream, P2b over the MLP output     > 0
    P3a  TopK, P3b JumpReLU give no gain over ReLU          within +-MARGIN_SPEC (declared before the run)
    P4a  width helps                                        widest - narrowest > 0
    P4b  ... then saturates                                 last width step within +-MARGIN_SPEC
    P5   a better MSE-L0 frontier does not mean better specificity
                                                            Spearman rho(explained variance, specificity) < MARGIN_RHO

A claim about SAEs at a hook is *not testable* unless the raw-hidden-state ceiling there clears its level
(`saelab.polysemy_ceiling`); the claims of one pair set are one family, Holm-corrected. P5's interval resamples
pairs with the SAEs fixed (a handful of SAEs gives no interval over SAEs worth the name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

from saelab import stats, zoo
from saelab.polysemy import ProbeActivations
from saelab.polysemy_ceiling import Ceiling, ceiling_preconditions
from saelab.polysemy_eval import PSEvalResult, bootstrap_ci, evaluate_sae, metric_difference, random_sae_like

#: declared before the run: "no difference" in specificity means within +-0.05 (the review's margin)
MARGIN_SPEC = 0.05
#: and "no relation" between frontier and specificity means a rank correlation below 0.3
MARGIN_RHO = 0.3
PAPER_NUMBERS = {"P1": "deeper layers: higher specificity (GPT-2 small)", "P2a": "attention output highest",
                 "P2b": "attention output highest", "P3a": "no consistent gain over ReLU",
                 "P3b": "no consistent gain over ReLU", "P4a": "width helps up to ~64x", "P4b": "then saturates",
                 "P5": "better MSE-L0 frontier, no better specificity"}


def score_sae(sae, probe_acts: ProbeActivations, name: str, *, hook: str | None = None, k: int = 5,
              seed: int = 0) -> dict[str, PSEvalResult]:
    """One SAE scored three ways: "template" read (with MSE / L0), "context" read, and a random SAE of its shape."""
    return {"template": evaluate_sae(sae, probe_acts, "template", name=name, k=k),
            "context": evaluate_sae(sae, probe_acts, "context", name=name, k=k, core=False),
            "random": evaluate_sae(random_sae_like(sae, seed=seed), probe_acts, "template", name="random " + name,
                                   hook=hook or sae.cfg.hook_name, k=k, core=False)}


def baseline_row(scored: Mapping[str, PSEvalResult], raw: PSEvalResult, n_boot: int = 2000) -> dict[str, float]:
    """One results-table line: the SAE's metrics (specificity with its bootstrap interval), its random SAE's and the
    raw units' specificity, recall and AUROC."""
    r, rnd = scored["template"], scored["random"]
    low, high = bootstrap_ci(r, "specificity", n_boot=n_boot)
    return {"specificity": r.metrics["specificity"], "spec_low": low, "spec_high": high,
            "recall": r.metrics["recall"], "accuracy": r.metrics["accuracy"], "f1": r.metrics["f1"],
            "auroc": r.roc("cosine").auroc, "l0": r.core["l0"], "explained_variance": r.core["explained_variance"],
            "random_specificity": rnd.metrics["specificity"], "random_recall": rnd.metrics["recall"],
            "random_auroc": rnd.roc("cosine").auroc, "raw_specificity": raw.metrics["specificity"],
            "raw_recall": raw.metrics["recall"], "raw_auroc": raw.roc("cosine").auroc}


def plot_sweep(ax, frame, title: str, xlabel: str, log: bool = False, d_model: int | None = None) -> None:
    """Specificity (with its interval) and recall of the SAE, its random SAE and the raw units along one sweep.

    `frame` holds `baseline_row` columns, one row per sweep value (its index); `log` puts the index on a log axis,
    labelled with the expansion factor over `d_model`.
    """
    x = list(range(len(frame))) if not log else frame.index.tolist()
    err = np.array([frame.specificity - frame.spec_low, frame.spec_high - frame.specificity])
    # ax.errorbar, not seaborn: the intervals are precomputed bootstrap ones, which seaborn would recompute wrongly
    ax.errorbar(x, frame.specificity, yerr=err, fmt="o-", color="tab:blue", capsize=3, label="SAE specificity")
    ax.plot(x, frame.recall, "o--", color="tab:blue", alpha=0.6, label="SAE recall")
    ax.plot(x, frame.random_specificity, "s-", color="tab:gray", label="random SAE specificity")
    ax.plot(x, frame.random_recall, "s--", color="tab:gray", alpha=0.6, label="random SAE recall")
    ax.plot(x, frame.raw_specificity, "^-", color="tab:red", label="raw units specificity")
    ax.plot(x, frame.raw_recall, "^--", color="tab:red", alpha=0.6, label="raw units recall")
    if log:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v}\n({v / d_model:.1f}x)" if d_model else str(v) for v in x])
        ax.minorticks_off()
    else:
        ax.set_xticks(x, [str(v) for v in frame.index])
    ax.set(title=title, xlabel=xlabel, ylim=(-0.03, 1.03))


def format_difference(d: Mapping[str, float]) -> str:
    """A `paired_difference` as "+0.123 [+0.050, +0.190]"."""
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def recall_auroc(rows: Sequence[Mapping[str, Any]]) -> str:
    """"recall a / b; AUROC c / d" of results-table rows (the other side of a specificity claim)."""
    return ("recall " + " / ".join(f"{float(r['recall']):.3f}" for r in rows)
            + "; AUROC " + " / ".join(f"{float(r['auroc']):.3f}" for r in rows))


def baselines_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The random SAE's and the raw units' specificity for results-table rows (with hook, d_sae columns)."""
    return "; ".join(f"{r['hook'].split('.')[-1]} L{r['hook'].split('.')[1]} {r['d_sae']}: random "
                     f"{float(r['random_specificity']):.3f}, raw {float(r['raw_specificity']):.3f}" for r in rows)


def frontier_rho(results: Sequence[PSEvalResult], explained_variance: Sequence[float], *, n_boot: int = 2000,
                 level: float = 0.95, seed: int = 0) -> stats.Estimate:
    """Spearman rho between the SAEs' explained variance (fixed) and their specificity, with a bootstrap interval
    over pairs (the same resampled pairs for every SAE)."""
    if len(results) < 3 or len(results) != len(explained_variance):
        raise ValueError(f"frontier_rho needs at least 3 SAEs, each with its explained variance; got "
                         f"{len(results)} results and {len(explained_variance)} values.")
    labels = results[0].labels
    if any(not np.array_equal(r.labels, labels) for r in results):
        raise ValueError("The SAEs were scored on different pairs; compare results of one probe set.")
    ev = rankdata(np.asarray(explained_variance, float))
    ev = (ev - ev.mean()) / ev.std()

    def rho(labels, *same, axis=-1):
        lab = np.moveaxis(labels, axis, -1) == 1
        with np.errstate(invalid="ignore", divide="ignore"):
            spec = np.stack([(~lab & ~np.moveaxis(s, axis, -1).astype(bool)).sum(-1) / (~lab).sum(-1)
                             for s in same], axis=-1)
            r = rankdata(spec, axis=-1)
            r = (r - r.mean(-1, keepdims=True)) / r.std(-1, keepdims=True)
            return (r * ev).mean(-1)

    return stats.bootstrap_interval(rho, labels, *[r.same for r in results], n_resamples=n_boot, level=level,
                                    seed=seed)


def claims(results: Mapping[Any, PSEvalResult], sweeps: Mapping[str, Mapping[Any, Any]],
           found: Mapping[str, Ceiling], explained_variance: Mapping[Any, float], *, pair_set: str,
           frontier: Sequence[Any], margin: float = MARGIN_SPEC, rho_margin: float = MARGIN_RHO,
           n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> list[stats.Verdict]:
    """P1-P5 on one pair set, Holm-corrected. `results`: {spec: template-read PSEvalResult}; `sweeps`: {"layer",
    "component", "activation", "width": {value: spec}}; `found`: ceilings by hook; `frontier`: the specs of P5.
    Each verdict rests on the specs it compares, so the quality gate touches only the claims a weak SAE carries."""
    opts = {"n_boot": n_boot, "level": level, "seed": seed}

    def diff(a, b):
        return metric_difference(results[a], results[b], "specificity", **opts)

    def pre(*specs):
        return ceiling_preconditions(found, [s.hook for s in specs])

    layers, comp, act = list(sweeps["layer"].values()), sweeps["component"], sweeps["activation"]
    widths = [sweeps["width"][w] for w in sorted(sweeps["width"])]
    tag, same = f" [{pair_set}]", {"direction": "equivalent", "margin": margin}
    # the shallowest layer whose ceiling clears (a layer the probe cannot read tells nothing about depth); rule fixed
    # before the run, and if none clears below the deepest, the first layer stays and the claim is not testable
    testable = [spec for spec in layers[:-1] if spec.hook in found and found[spec.hook].clears]
    shallowest = testable[0] if testable else layers[0]
    tests = [
        ("P1 deeper layers raise specificity (deepest - shallowest readable)", layers[-1], shallowest, {}),
        ("P2a attention output raises specificity over the residual stream", comp["attention out"],
         comp["residual"], {}),
        ("P2b attention output raises specificity over the MLP output", comp["attention out"], comp["MLP out"], {}),
        ("P3a TopK gives no gain over ReLU", act["topk"], act["relu"], same),
        ("P3b JumpReLU gives no gain over ReLU", act["jumprelu"], act["relu"], same),
        ("P4a width helps (widest - narrowest)", widths[-1], widths[0], {}),
        ("P4b width then saturates (last step)", widths[-1], widths[-2], same)]
    out = [stats.verdict(diff(a, b), claim=claim + tag, preconditions=pre(a, b), rests_on=(a, b), **kw)
           for claim, a, b, kw in tests]
    rho = frontier_rho([results[s] for s in frontier], [explained_variance[s] for s in frontier], **opts)
    out.append(stats.verdict(rho, direction="less", margin=rho_margin, preconditions=pre(*frontier),
                             rests_on=tuple(frontier),
                             claim="P5 a better MSE-L0 frontier does not mean better specificity (Spearman rho)"
                                   + tag))
    return stats.verdicts_with_holm(out)


def verdict_table(verdicts: Sequence[stats.Verdict], saes, *, smoke: bool):
    """The claims table with the paper's numbers, gated on the SAEs' quality; a smoke run says it is no finding."""
    return zoo.verdict_table(verdicts, saes, smoke=smoke, paper_numbers=PAPER_NUMBERS)


__all__ = ["MARGIN_RHO", "MARGIN_SPEC", "PAPER_NUMBERS", "baseline_row", "baselines_text", "claims",
           "format_difference", "frontier_rho", "plot_sweep", "recall_auroc", "score_sae", "verdict_table"]
