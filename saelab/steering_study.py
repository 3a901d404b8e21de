"""notebook 06: the study around the steering criteria: profile each zoo SAE (records, a pool of live latents
with their output scores and Delta C_1, a sample for the interpretability proxies), build the steering targets,
and draw the tables and plots the notebook shows."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from saelab.latents import latent_records
from saelab.steering import selection_scores
from saelab.steering_eval import SteeringTarget, interpretability_proxies
from saelab.steering_protocol import choose_arms


def profile_sae(model, sae, activations, *, pool: int, n_interp: int, n_steer: int, seed: int = 0) -> dict[str, Any]:
    """One SAE's latent records on `activations`, a seeded random pool of live latents with their output scores
    and Delta C_1, a sample for the interpretability proxies, and `n_steer` latents per arm
    (`steering_protocol.choose_arms`: random, output score, and the Delta C up and down tiers)."""
    records = latent_records(model, sae, activations=activations, n_samples=8, progress=False)
    alive = records.latents[records.fire_count > 0]
    order = alive[torch.randperm(len(alive), generator=torch.Generator().manual_seed(seed))]
    ids = order[:pool].tolist()
    scores = selection_scores(model, sae, ids, records)
    return {"records": records, "pool": ids, "interp_sample": order[:n_interp].tolist(), "n_alive": len(alive),
            **scores, "chosen": choose_arms(ids, scores["output_score"], scores["delta_token_confidence"], n_steer)}


def study_saes(model, saes: dict, activations, profiles: dict, *, encoder=None, **profile_options) -> dict:
    """Profile every SAE not yet in `profiles` (filled in place, `profile_sae` options) and return the
    interpretability proxies of each SAE, by name."""
    interp = {}
    for name, sae in tqdm(saes.items(), desc="SAEs"):
        if name not in profiles:
            profiles[name] = profile_sae(model, sae, activations, **profile_options)
        p = profiles[name]
        interp[name] = interpretability_proxies(model, sae, p["records"], p["interp_sample"], encoder=encoder)
    return interp


def spread(names, n: int) -> list:
    """`n` names spread evenly over `names` (the middle of each of n equal runs): for the zoo's twelve SAEs in
    catalog order and n = 4, the middle sparsity of each architecture."""
    names = list(names)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: give a positive number of SAEs.")
    if n >= len(names):
        return names
    return [names[int((i + 0.5) * len(names) / n)] for i in range(n)]


def interpretability_table(interp: dict):
    """A DataFrame of the proxies per SAE plus their mean rank across SAEs ("interpretability (mean rank)")."""
    import pandas as pd
    from scipy.stats import rankdata

    table = pd.DataFrame(interp).T[["input_score", "coherence", "coherence_chance"]]
    table["interpretability (mean rank)"] = (rankdata(table["input_score"], nan_policy="omit")
                                             + rankdata(table["coherence"], nan_policy="omit")) / 2
    return table


def steering_targets(profiles: dict, saes: dict, n_contexts: int = 8, names=None) -> list[SteeringTarget]:
    """One `SteeringTarget` per chosen latent of every profiled SAE (or of the SAEs in `names`); label: the SAE's
    name, group: the arm."""
    targets = []
    for name, p in profiles.items():
        if names is not None and name not in names:
            continue
        rec = p["records"]
        for method, latents in p["chosen"].items():
            targets += [SteeringTarget(saes[name], j, float(rec.max_act[rec.position(j)]),
                                       rec.top_context_texts(j, n_contexts), label=name, group=method)
                        for j in latents]
    return targets


def plot_scores_by_method(by_method):
    """Bar of each method's mean steering score with one dot per SAE; `by_method` has SAEs as rows, methods as
    columns."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    methods, means = list(by_method.columns), by_method.mean()
    scores = by_method.melt(var_name="method", value_name="score")  # one row per (SAE, method)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.barplot(scores, x="method", y="score", hue="method", order=methods, errorbar=None, alpha=0.6, legend=False,
                palette=["#999", "tab:blue", "tab:orange"][:len(methods)], ax=ax)
    sns.swarmplot(scores, x="method", y="score", order=methods, color="k", size=4, ax=ax)
    ax.set_xticks(range(len(methods)), [f"{m}\n(mean {means[m]:.3f})" for m in methods])
    ax.set(xlabel="", ylabel="steering score (held-out prompts)",
           title="Steering score by selection method (dots: SAEs)")
    plt.tight_layout()
    plt.show()


ARCH_COLORS = {"topk": "tab:blue", "batchtopk": "tab:green", "relu": "tab:red", "jumprelu": "tab:purple"}


def plot_rank_agreement(interp_rank, by_method, taus: dict):
    """One panel per method: each SAE's interpretability rank against its mean steering score, coloured by
    architecture (the first word of the SAE's name), titled with Kendall's tau-b and its interval."""
    import matplotlib.pyplot as plt

    methods = list(by_method.columns)
    fig, axes = plt.subplots(1, len(methods), figsize=(13, 3.8), sharex=True, squeeze=False)
    axes = axes[0]
    for ax, method in zip(axes, methods):
        for name, x, y in zip(by_method.index, interp_rank, by_method[method]):
            ax.scatter(x, y, color=ARCH_COLORS.get(name.split()[0], "k"), s=30)
            ax.annotate(" ".join(name.split()[1:]), (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
        t = taus[method]
        ax.set(title=f"{method}\nτb = {t['tau']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}]",
               xlabel="interpretability (mean rank of proxies)")
    axes[0].set_ylabel("mean steering score")
    for arch, color in ARCH_COLORS.items():
        axes[-1].scatter([], [], color=color, label=arch)
    axes[-1].legend(fontsize=8)
    plt.tight_layout()
    plt.show()


__all__ = [
    "ARCH_COLORS",
    "interpretability_table",
    "plot_rank_agreement",
    "plot_scores_by_method",
    "profile_sae",
    "spread",
    "steering_targets",
    "study_saes",
]
