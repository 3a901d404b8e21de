"""notebook 06: known-answer checks of the judge-free steering score, run before the score is used (issue 14).

A judge that has not been validated can decide a method comparison by its own quirks. Each check below has an
answer known in advance; the judge passes when every check's paired bootstrap interval (`saelab.stats`) comes out
on the known side:

    J1 concept: steering along a latent's decoder row carries its concept better than steering along a random
       direction of the same norm (same latent rated, same alpha > 0, same prompt).
    J2 concept rises with alpha: at the largest alpha of the grid the latent's concept rating beats alpha = 0.
    J3 fluency: a natural continuation of the prompt is more fluent than the same tokens shuffled.
    J4 relevance: a natural (sampled) continuation of the prompt is more relevant than another prompt's.

The concept checks use **latents with an obvious concept**: per WordNet supersense of held-out topic sentences,
the latent that fires on the most sentences of that class and the fewest of any other (`concept_latents`).

    latents = concept_latents(sae, eval_acts[hook], eval_acts.offsets, labels)     # labels -1: not a topic text
    concept = concept_frame(model, control_targets(sae, latents, records), prompts, (0, 2, 8), judge)
    text = text_frame(model, prompts, judge, sae, latents[0].latent)
    verdicts = judge_checks(concept, text)
    ok, why = judge_passed(verdicts)
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from saelab import stats
from saelab.steering import Generation, generate
from saelab.steering_eval import RATINGS, SteeringCase, SteeringTarget, rate_rows, steering_score

OWN, RANDOM_DIRECTION = "own direction", "random direction"


@dataclass(frozen=True)
class ConceptLatent:
    """A latent with an obvious concept: the class it is selective for, its firing rate on that class's texts and
    the highest rate on any other class."""

    latent: int
    label: int
    rate_in: float
    rate_out: float

    @property
    def selectivity(self) -> float:
        return self.rate_in - self.rate_out


@torch.no_grad()
def text_firing(sae, tokens: torch.Tensor, offsets: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """Which latents fire on any token of each text: [n_texts, d_sae] bool, from token activations [n_tokens, d]
    and the rows where texts start (`Activations.offsets`: n_texts + 1 values)."""
    offsets = torch.as_tensor(offsets, dtype=torch.long)
    if offsets.dim() != 1 or len(offsets) < 2 or int(offsets[-1]) != len(tokens):
        raise ValueError(f"offsets must run from 0 to the {len(tokens)} token rows (n_texts + 1 values), got "
                         f"{len(offsets)} values ending at {int(offsets[-1]) if len(offsets) else None}.")
    text_of = torch.repeat_interleave(torch.arange(len(offsets) - 1), offsets.diff())
    out = torch.zeros(len(offsets) - 1, sae.cfg.d_sae)
    for start in range(0, len(tokens), chunk):
        z = (sae.encode(tokens[start:start + chunk].to(sae.device, sae.dtype)).float().cpu() > 0).float()
        out.index_add_(0, text_of[start:start + chunk], z)  # firing tokens per text
    return out > 0


def concept_latents(sae, tokens: torch.Tensor, offsets: torch.Tensor, labels: Sequence[int], *, n: int = 4,
                    min_rate: float = 0.2) -> list[ConceptLatent]:
    """Per class of `labels` (one per text; -1 leaves a text out), the latent with the largest selectivity (its
    firing rate on the class's texts minus its highest rate on another class); the `n` most selective of those,
    each at least `min_rate` on its class and selective (> 0). Distinct latents."""
    labels = np.asarray(labels)
    fires = text_firing(sae, tokens, offsets).numpy()
    if len(labels) != len(fires):
        raise ValueError(f"{len(labels)} labels for {len(fires)} texts: give one label per text (-1 to leave out).")
    classes = [c for c in np.unique(labels) if c >= 0]
    if len(classes) < 2:
        raise ValueError("Concept latents need texts of at least two classes.")
    rates = np.stack([fires[labels == c].mean(0) for c in classes])  # [classes, d_sae]
    found, used = [], set()
    for i, c in enumerate(classes):
        other = np.delete(rates, i, axis=0).max(0)
        sel = np.where(rates[i] >= min_rate, rates[i] - other, -np.inf)
        for j in np.argsort(-sel, kind="stable"):
            if not np.isfinite(sel[j]) or sel[j] <= 0:
                break
            if int(j) not in used:
                found.append(ConceptLatent(int(j), int(c), float(rates[i, j]), float(other[j])))
                used.add(int(j))
                break
    return sorted(found, key=lambda c: -c.selectivity)[:n]


def control_targets(sae, latents: Sequence[ConceptLatent | int], records, *, n_contexts: int = 8, seed: int = 0,
                    label: str = "") -> list[SteeringTarget]:
    """Two targets per latent: its own decoder row, and a seeded random direction of the same norm (rated for the
    same latent, with the same top activation and top contexts)."""
    if not len(latents):
        raise ValueError("No latents for the controls: concept_latents found no latent selective for any class "
                         "(give more labelled texts, or lower min_rate).")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for item in latents:
        j = int(item.latent if isinstance(item, ConceptLatent) else item)
        top, texts = float(records.max_act[records.position(j)]), records.top_context_texts(j, n_contexts)
        out.append(SteeringTarget(sae, j, top, texts, label=label, group=OWN))
        out.append(SteeringTarget(sae, j, top, texts, label=label, group=RANDOM_DIRECTION,
                                  direction=torch.randn(sae.cfg.d_in, generator=generator)))
    return out


def _frame(rated, rows, prompts) -> pd.DataFrame:
    return pd.DataFrame([{"group": t.group, "label": t.label, "latent": t.latent, "alpha": a, "prompt": p,
                          **{k: r[k] for k in RATINGS}, "score": steering_score(r), "text": c.steered.text}
                         for (t, a, p), (c, r) in zip(rows, rated)])


def concept_frame(model, targets: Sequence[SteeringTarget], prompts: Sequence[str], alphas: Sequence[float],
                  judge: Callable, *, max_new_tokens: int = 24, batch_size: int = 64, progress: bool = False,
                  forward_dtype: str | None = None) -> pd.DataFrame:
    """Every target at every alpha on every prompt, rated: one row per (group, latent, alpha, prompt). A random
    direction at alpha 0 is the unsteered model, so it is generated only for its own direction. `forward_dtype`:
    the generations' (`saelab.steering.generate`)."""
    plain = generate(model, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                     forward_dtype=forward_dtype)
    rows = [(t, float(a), p) for t in targets for a in alphas for p in range(len(prompts))
            if not (t.direction is not None and float(a) == 0.0)]
    rated = rate_rows(model, rows, prompts, plain, judge, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      progress=progress, forward_dtype=forward_dtype)
    return _frame(rated, rows, prompts)


def _variant(prompt: Generation, ids: list[int], tokenizer) -> Generation:
    return Generation(prompt.prompt, prompt.prompt_ids, list(ids), tokenizer.decode(ids, skip_special_tokens=True))


def text_frame(model, prompts: Sequence[str], judge: Callable, sae, latent: int, *, max_new_tokens: int = 24,
               n_samples: int = 2, seed: int = 0, batch_size: int = 64, forward_dtype: str | None = None
               ) -> pd.DataFrame:
    """Fluency and relevance controls: per prompt, `n_samples` sampled continuations ("natural"), the same tokens
    shuffled ("shuffled") and the next prompt's continuation in their place ("other prompt"), each rated against
    the prompt's greedy unsteered answer (the judge needs an SAE latent for its concept rating: any will do)."""
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError("The relevance control swaps continuations between prompts: give at least two prompts.")
    plain = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                     forward_dtype=forward_dtype)
    rng, cases, rows = _random.Random(seed), [], []
    for s in range(n_samples):
        sampled = generate(model, prompts, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                           do_sample=True, seed=seed + s, batch_size=batch_size, forward_dtype=forward_dtype)
        for p, g in enumerate(sampled):
            shuffled = list(g.ids)
            rng.shuffle(shuffled)
            other = sampled[(p + 1) % len(prompts)]
            for kind, gen in (("natural", g), ("shuffled", _variant(g, shuffled, model.tokenizer)),
                              ("other prompt", _variant(g, other.ids, model.tokenizer))):
                cases.append(SteeringCase(prompts[p], gen, plain[p], sae, int(latent), 0.0))
                rows.append({"kind": kind, "prompt": p, "sample": s})
    ratings = judge(cases)
    return pd.DataFrame([{**row, **{k: r[k] for k in RATINGS}} for row, r in zip(rows, ratings)])


def _paired(frame: pd.DataFrame, index: list[str], column: str, value: str, a, b) -> tuple[np.ndarray, np.ndarray]:
    table = frame.pivot_table(index=index, columns=column, values=value, aggfunc="mean")[[a, b]].dropna()
    return table[a].to_numpy(float), table[b].to_numpy(float)


def judge_checks(concept: pd.DataFrame, text: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> list[stats.Verdict]:
    """J1-J4 (see the module's docstring), each the mean paired difference on the known side ("greater") with a
    paired bootstrap interval. Not Holm-corrected: the judge passes only when every check holds on its own."""
    opts = {"n_resamples": n_boot, "seed": seed, "level": level}
    steered = concept[concept.alpha > 0]
    top, bottom = concept.alpha.max(), concept.alpha.min()
    own = concept[concept.group == OWN]
    pairs = {"J1: concept, own decoder row > random direction of the same norm":
             _paired(steered, ["latent", "alpha", "prompt"], "group", "concept", OWN, RANDOM_DIRECTION),
             f"J2: concept at alpha {top:g} > at alpha {bottom:g} (own direction)":
             _paired(own, ["latent", "prompt"], "alpha", "concept", top, bottom),
             "J3: fluency, natural continuation > the same tokens shuffled":
             _paired(text, ["prompt", "sample"], "kind", "fluency", "natural", "shuffled"),
             "J4: relevance, natural continuation > another prompt's continuation":
             _paired(text, ["prompt", "sample"], "kind", "relevance", "natural", "other prompt")}
    return [stats.verdict(stats.paired_difference(np.mean, a, b, **opts), direction="greater", claim=claim)
            for claim, (a, b) in pairs.items()]


def judge_passed(verdicts: Sequence[stats.Verdict]) -> tuple[bool, str]:
    """(every check held, why): a precondition for the method comparison."""
    failed = [f"{v.claim.split(':')[0]} {v.outcome}" for v in verdicts if v.outcome != "held"]
    if failed:
        return False, "the judge-free score failed known-answer checks: " + ", ".join(failed)
    return True, f"the judge-free score passed its {len(verdicts)} known-answer checks"


def check_table(verdicts: Sequence[stats.Verdict], *, smoke: bool) -> pd.DataFrame:
    """The checks as a table (claim, value, interval, verdict, reason); in a smoke run every verdict says it is not
    a finding."""
    table = stats.claims_table(verdicts)[["claim", "value", "interval", "verdict", "reason"]]
    if smoke:
        table["verdict"] = "smoke run, not a finding: " + table["verdict"].astype(str)
    return table


def plot_concept_by_alpha(concept: pd.DataFrame):
    """Mean concept rating against alpha for the latents' own decoder rows and for random directions of the same
    norm (one line each, with the spread over latents and prompts as a band of +-1 standard error)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(concept, x="alpha", y="concept", hue="group", hue_order=[OWN, RANDOM_DIRECTION],
                 palette={OWN: "tab:blue", RANDOM_DIRECTION: "tab:gray"}, errorbar="se", marker="o", ax=ax)
    ax.set(xlabel="alpha (units of the latent's top activation)", ylabel="judge-free concept rating",
           title="Known-answer check: concept of latents with an obvious concept")
    ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()


__all__ = ["OWN", "RANDOM_DIRECTION", "ConceptLatent", "check_table", "concept_frame", "concept_latents",
           "control_targets", "judge_checks", "judge_passed", "plot_concept_by_alpha", "text_firing", "text_frame"]
