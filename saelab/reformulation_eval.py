"""notebook 07: scoring prompt reformulation against controls: prompt variants, policies, metrics and verdicts.

Every policy is a combination of per-item outcomes of a few prompt *variants*, all scored on the same items:

    none      the unannotated prompt
    external  the word annotated with the gloss of the sense the sentence encoder reads (the chosen gloss)
    wrong     annotated with the gloss of another sense (content control)
    filler    annotated with a content-free note of the same token length (length control)
    gold      annotated with the gold sense's gloss (oracle ceiling; the only use of the gold sense)

A policy annotates the items its trigger selects and keeps the unannotated outcome elsewhere,
`outcome = where(trigger, variant, none)`, so policies differ only where their triggers or notes differ, and every
comparison is paired. Random triggering at the SAE's rate is summarised by its expectation per item,
`(1 - rate) * correct(none) + rate * correct(external)`, and by many draws.

    study = run_study(model, sae, items, names, encoder=encoder)
    policy_table(study)                    # accuracy, macro-F1, paired differences, McNemar, repair / damage
    stats.claims_table(claims(study))      # R1 and R2 by saelab.stats' verdict rule, Holm-corrected
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest
from sklearn.metrics import f1_score, roc_auc_score

from saelab import stats
from saelab.models import model_name
from saelab.reformulation import (
    READ_FORMAT,
    TOPIC_FORMAT,
    TWEET_FORMAT,
    WIC_FORMAT,
    PromptFormat,
    PromptRun,
    Prototypes,
    Reading,
    SenseItem,
    calibration_offset,
    disagreement,
    external_reading,
    filler,
    glosses,
    item_prompt,
    nearest_sense,
    predict,
    prototypes,
    read_prompts,
    tweet_items,
    wic_items,
    wic_prompt,
    wrong_sense,
)

VARIANTS = ("none", "external", "wrong", "filler", "gold")
DETECTORS = ("sae", "raw")
SENSE_PRECISION, SENSE_MIN_FIRES = 0.6, 5  # a "sense latent": fires on >= 5 contexts, >= 60% of them one supersense


@dataclass
class Study:
    """One model's run on one task: per-item predictions of every variant, the readings and the detectors."""

    name: str
    label_names: list[str]
    items: list[SenseItem]
    logits: dict[str, torch.Tensor]  # variant -> [n, n_labels]; NaN rows where the variant was not needed
    offset: torch.Tensor  # calibration (label prior of the unannotated prompts)
    readings: dict[str, Reading]  # "sae", "raw", "external"
    scores: dict[str, np.ndarray]  # detector -> disagreement score (> 0: flagged)
    notes: dict[str, list[str | None]]  # variant -> the note inserted per item (None: not annotated)
    acts: torch.Tensor  # the SAE's input at the read position of the unannotated prompts
    codes: torch.Tensor  # its SAE codes
    protos: Prototypes | None = None
    meta: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items])

    def pred(self, variant: str) -> np.ndarray:
        """Calibrated predictions of a variant (-1 where it was not scored)."""
        logits = self.logits[variant]
        out = predict(torch.nan_to_num(logits), self.offset)
        return np.where(torch.isnan(logits).any(-1).numpy(), -1, out)

    def correct(self, variant: str) -> np.ndarray:
        return self.pred(variant) == self.labels

    def flags(self, detector: str = "sae") -> np.ndarray:
        return self.scores[detector] > 0

    def entropy(self) -> np.ndarray:
        """Entropy of the calibrated label distribution of the unannotated prompts (the confidence trigger)."""
        p = (self.logits["none"].log_softmax(-1) - self.offset).softmax(-1)
        return -(p * p.clamp_min(1e-12).log()).sum(-1).numpy()


def score_variants(model, items: Sequence[SenseItem], hook: str, notes: Mapping[str, Sequence[str | None]], *,
                   fmt: PromptFormat = TOPIC_FORMAT, cache: bool | None = None,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """Label logits of each annotated variant in one pass (identical prompts run once); NaN rows for items whose
    note is None."""
    jobs = [(v, i) for v, per_item in notes.items() for i, note in enumerate(per_item) if note is not None]
    out = {v: torch.full((len(items), len(fmt.label_words)), float("nan")) for v in notes}
    if jobs:
        run = read_prompts(model, [item_prompt(model, items[i], notes[v][i], fmt) for v, i in jobs], hook, fmt=fmt,
                           cache=cache, progress=progress)
        for (v, i), row in zip(jobs, run.logits):
            out[v][i] = row
    return out


def build_study(model, sae, items: Sequence[SenseItem], label_names: Sequence[str], run0: PromptRun,
                protos: Prototypes, external: Reading, *, fmt: PromptFormat = TOPIC_FORMAT, level: str = "lexname",
                seed: int = 0, cache: bool | None = None, progress: bool = True, name: str = "") -> Study:
    """The readings, flags and annotated variants of items whose unannotated run, prototypes and external
    reading are given. Only flagged items get the wrong-gloss and filler variants (no policy uses them elsewhere)."""
    items = list(items)
    with torch.no_grad():
        codes = sae.encode(run0.acts.to(sae.W_enc.dtype)).float()
    readings = {"sae": nearest_sense(codes, protos.encoded(sae), items, protos, name="SAE codes"),
                "raw": nearest_sense(run0.acts, protos.acts, items, protos, name="raw activations"),
                "external": external}
    scores = {d: disagreement(readings[d], external, items, level) for d in DETECTORS}
    chosen = glosses(items, external.choice)
    flagged = scores["sae"] > 0
    wrong = glosses(items, wrong_sense(items, external.choice, seed))
    notes = {"external": chosen, "gold": [it.gold_gloss for it in items],
             "wrong": [g if f else None for g, f in zip(wrong, flagged)],
             "filler": [filler(model, g) if f else None for g, f in zip(chosen, flagged)]}
    logits = {"none": run0.logits, **score_variants(model, items, sae.cfg.hook_name, notes, fmt=fmt, cache=cache,
                                                     progress=progress)}
    return Study(name, list(label_names), items, logits, calibration_offset(run0.logits), readings, scores,
                 {"none": [None] * len(items), **notes}, run0.acts, codes, protos, {"level": level, "seed": seed})


def run_study(model, sae, items: Sequence[SenseItem], label_names: Sequence[str], *, encoder=None,
              fmt: PromptFormat = TOPIC_FORMAT, level: str = "lexname", max_examples: int = 2, seed: int = 0,
              cache: bool | None = None, progress: bool = True) -> Study:
    """Every step of notebook 07's pipeline on one model: the unannotated pass, the sense prototypes, the external
    reading, then `build_study`."""
    hook = sae.cfg.hook_name
    run0 = read_prompts(model, [item_prompt(model, it, None, fmt) for it in items], hook, fmt=fmt, cache=cache,
                        progress=progress)
    protos = prototypes(model, items, hook, fmt=fmt, max_examples=max_examples, cache=cache, progress=progress)
    external = external_reading(items, encoder, max_examples=max_examples)
    return build_study(model, sae, items, label_names, run0, protos, external, fmt=fmt, level=level, seed=seed,
                       cache=cache, progress=progress, name=model_name(model))


# ------------------------------------------------------------------------------------------------------------------
# Policies and their metrics
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Annotate the items `trigger` selects with `variant`'s note; keep the unannotated prompt elsewhere."""

    name: str
    trigger: np.ndarray
    variant: str

    def outcome(self, study: Study) -> np.ndarray:
        pred = np.where(self.trigger, study.pred(self.variant), study.pred("none"))
        if (pred < 0).any():
            raise ValueError(f"policy {self.name!r} triggers items its variant {self.variant!r} did not score")
        return pred


def top_k_mask(score: np.ndarray, k: int) -> np.ndarray:
    """The k items with the highest score (ties broken by position)."""
    mask = np.zeros(len(score), bool)
    mask[np.argsort(-score, kind="stable")[:k]] = True
    return mask


def policies(study: Study) -> dict[str, Policy]:
    """Every policy of notebook 07, by name (random triggering is `random_triggering`'s)."""
    n, flag = len(study.items), study.flags("sae")
    none, every = np.zeros(n, bool), np.ones(n, bool)
    return {p.name: p for p in [
        Policy("no annotation", none, "none"),
        Policy("annotate every item", every, "external"),
        Policy("SAE trigger", flag, "external"),
        Policy("raw-activation trigger", study.flags("raw"), "external"),
        Policy("entropy trigger (same rate)", top_k_mask(study.entropy(), int(flag.sum())), "external"),
        Policy("SAE trigger, wrong-sense gloss", flag, "wrong"),
        Policy("SAE trigger, length-matched filler", flag, "filler"),
        Policy("oracle: gold gloss, every item", every, "gold"),
    ]}


def random_triggering(study: Study, rate: float, n_draws: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Random triggering at `rate`: the accuracy of `n_draws` random subsets of round(rate * n) items annotated
    with the chosen gloss, and each item's expected correctness over such draws."""
    c0, c1 = study.correct("none"), study.correct("external")
    n, k = len(c0), int(round(rate * len(c0)))
    rng = np.random.default_rng(seed)
    draws = np.array([np.where(top_k_mask(rng.random(n), k), c1, c0).mean() for _ in range(n_draws)])
    return {"accuracies": draws, "expected": (1 - k / n) * c0 + (k / n) * c1}


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar test (two-sided binomial test on the discordant pairs); 1.0 when there are none."""
    b, c = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def macro_f1(labels: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    return float(f1_score(labels, pred, labels=list(range(n_labels)), average="macro", zero_division=0))


def _interval(e: stats.Estimate, name: str = "accuracy") -> dict[str, float]:
    low = "low" if name == "accuracy" else f"{name.split()[0]} low"
    return {name: e.value, low: e.low, low.replace("low", "high"): e.high}


def policy_table(study: Study, *, n_boot: int = 2000, n_draws: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per policy: items triggered, accuracy with its 95% bootstrap interval (low, high), macro-F1, the
    paired difference to no annotation (Δ low, Δ high; exact McNemar p), repaired and damaged items among the
    triggered. Random triggering's row gives the mean accuracy of its draws and their 2.5 / 97.5 percentiles."""
    y, c0, k = study.labels, study.correct("none"), len(study.label_names)
    rows = []
    for p in policies(study).values():
        pred = p.outcome(study)
        c = pred == y
        acc = stats.bootstrap_interval(np.mean, c, n_resamples=n_boot, seed=seed)
        diff = stats.paired_difference(np.mean, c, c0, n_resamples=n_boot, seed=seed)
        t = p.trigger
        rows.append({"policy": p.name, "triggered": int(t.sum()), "rate": t.mean(), **_interval(acc),
                     "macro-F1": macro_f1(y, pred, k), **_interval(diff, "Δ vs none"), "McNemar p": mcnemar_p(c, c0),
                     "repaired": int((t & ~c0 & c).sum()), "damaged": int((t & c0 & ~c).sum()),
                     "repair rate": (t & ~c0 & c).sum() / max(t.sum(), 1),
                     "damage rate": (t & c0 & ~c).sum() / max(t.sum(), 1)})
    rate = study.flags("sae").mean()
    rand = random_triggering(study, rate, n_draws, seed)
    low, high = np.percentile(rand["accuracies"], [2.5, 97.5])
    diff = stats.paired_difference(np.mean, rand["expected"], c0.astype(float), n_resamples=n_boot, seed=seed)
    rows.insert(3, {"policy": f"random trigger, same rate ({n_draws} draws)",
                    "triggered": int(round(rate * len(y))), "rate": rate, "accuracy": rand["accuracies"].mean(),
                    "low": low, "high": high, **_interval(diff, "Δ vs none")})
    return pd.DataFrame(rows).set_index("policy")


def detector_table(study: Study) -> pd.DataFrame:
    """Each trigger's flag rate, its AUROC against the unannotated prompt's errors, and the error rate among the
    items it flags and the rest."""
    errors = ~study.correct("none")
    scores = {"SAE codes": study.scores["sae"], "raw activations": study.scores["raw"],
              "entropy (confidence)": study.entropy()}
    rows = {}
    for name, s in scores.items():
        flag = s > 0 if name != "entropy (confidence)" else top_k_mask(s, int(study.flags("sae").sum()))
        auroc = roc_auc_score(errors, s) if 0 < errors.sum() < len(errors) else np.nan
        rows[name] = {"flag rate": flag.mean(), "AUROC vs errors": auroc,
                      "error rate, flagged": errors[flag].mean() if flag.any() else np.nan,
                      "error rate, not flagged": errors[~flag].mean() if (~flag).any() else np.nan}
    return pd.DataFrame(rows).T


def reading_table(study: Study) -> pd.DataFrame:
    """How often each reading picks the gold sense (among items whose gold sense is a candidate) and a sense of
    the gold supersense: a diagnostic that uses the gold sense, never a trigger's input."""
    gold = np.array([it.gold for it in study.items])
    has = gold >= 0
    out = {}
    for key, r in study.readings.items():
        lex = [it.senses[c].lexname == it.senses[it.gold].lexname if it.gold >= 0 else
               it.senses[c].lexname == study.label_names[it.label] for it, c in zip(study.items, r.choice)]
        out[r.name or key] = {"gold sense": (r.choice[has] == gold[has]).mean(), "gold supersense": np.mean(lex)}
    chance = np.mean([1 / len(it.senses) for it in np.array(study.items)[has]])
    out["chance (uniform over candidates)"] = {"gold sense": chance, "gold supersense": np.nan}
    return pd.DataFrame(out).T


# ------------------------------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------------------------------


def preconditions(study: Study, min_flag_rate: float = 0.05, margin: float = 0.05) -> dict[str, tuple[bool, str]]:
    """R1 and R2 are not testable when the unannotated accuracy is within `margin` of chance or of 1, or when
    the SAE flags fewer than `min_flag_rate` of the items."""
    acc, chance, rate = study.correct("none").mean(), 1 / len(study.label_names), study.flags("sae").mean()
    return {"base accuracy away from chance and ceiling": (chance + margin < acc < 1 - margin,
                                                           f"accuracy {acc:.3f}, chance {chance:.3f}"),
            "flag rate at least 5%": (rate >= min_flag_rate, f"the SAE flags {rate:.3f} of the items")}


def claims(study: Study, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[stats.Verdict]:
    """R1 (the SAE-triggered reformulation beats no annotation) and R2 (it beats random triggering at its rate,
    the wrong-sense gloss and the length-matched filler), Holm-corrected as one family."""
    pol, pre = policies(study), preconditions(study)
    y, c0 = study.labels, study.correct("none")
    c_sae = pol["SAE trigger"].outcome(study) == y
    expected = random_triggering(study, study.flags("sae").mean(), 1, seed)["expected"]
    opts = {"n_resamples": n_boot, "seed": seed, "level": level}
    tests = {"R1: SAE-triggered annotation beats no annotation": c0,
             "R2a: ... beats random triggering at the same rate": expected,
             "R2b: ... beats the same trigger with a wrong-sense gloss":
                 pol["SAE trigger, wrong-sense gloss"].outcome(study) == y,
             "R2c: ... beats the same trigger with a length-matched filler":
                 pol["SAE trigger, length-matched filler"].outcome(study) == y}
    out = [stats.verdict(stats.paired_difference(np.mean, c_sae.astype(float), other.astype(float), **opts),
                         direction="greater", preconditions=pre, claim=claim) for claim, other in tests.items()]
    return stats.verdicts_with_holm(out)


def sense_latents(study: Study, sae, *, precision: float = SENSE_PRECISION,
                  min_fires: int = SENSE_MIN_FIRES) -> pd.DataFrame:
    """Latents that fire on the word mostly for one supersense in the dictionary (gloss and example contexts, by
    the lexicographer file of their sense), checked on the task's sentences (unseen contexts): one row per latent
    whose supersense is a task class, with its precision in both and whether it keeps it (>= `precision`)."""
    protos = study.protos
    lex = {(it.lemma, it.pos): [s.lexname for s in it.senses] for it in study.items}
    ctx_lex = np.array([lex[k][j] for k, j in zip(protos.key, protos.sense)])
    ctx_fire, item_fire = (protos.encoded(sae) > 0).numpy(), (study.codes > 0).numpy()
    names, labels = np.array(study.label_names), np.array(study.label_names)[study.labels]
    rows = []
    for latent in np.flatnonzero(ctx_fire.sum(0) >= min_fires):
        fired = ctx_lex[ctx_fire[:, latent]]
        values, counts = np.unique(fired, return_counts=True)
        top, share = values[counts.argmax()], counts.max() / len(fired)
        on_items = labels[item_fire[:, latent]]
        if share >= precision and top in names and len(on_items) >= 2:
            held = float((on_items == top).mean())
            rows.append({"latent": int(latent), "supersense": top, "dictionary fires": len(fired),
                         "dictionary precision": share, "task fires": len(on_items), "task precision": held,
                         "kept": held >= precision})
    return pd.DataFrame(rows, columns=["latent", "supersense", "dictionary fires", "dictionary precision",
                                       "task fires", "task precision", "kept"])


def side_claims(study: Study, sae, *, corpus_variance: float | None = None, n_boot: int = 2000,
                seed: int = 0) -> list[stats.Verdict]:
    """The paper's side claims, measured here: reconstruction FVU < 5% on the task prompts (at the read
    position), > 93% of sense latents keep their precision on unseen sentences, and L0 / d_sae <= 1% (a design
    choice of a TopK SAE, so not a finding).

    FVU has two readings, and the paper does not say which: S1 divides the squared error at the read position by
    the variance across the task's items (small when the prompts look alike), and, when `corpus_variance` is given
    (`zoo.heldout_token_variance`), S1b divides it by the per-token variance of the held-out corpus, the
    denominator of the zoo's quality gate."""
    x = study.acts
    with torch.no_grad():
        err = ((sae(x.to(sae.W_enc.dtype)).float() - x) ** 2).sum(-1).numpy()
    dev = ((x - x.mean(0)) ** 2).sum(-1).numpy()
    fvu = stats.bootstrap_interval(lambda e, d, axis=-1: e.sum(axis) / d.sum(axis), err, dev, n_resamples=n_boot,
                                   seed=seed)
    fvu_claims = [stats.verdict(fvu, direction="less", null=0.05,
                                claim="S1: reconstruction FVU on the task prompts < 5% (across-item variance)")]
    if corpus_variance is not None:
        corpus_fvu = stats.bootstrap_interval(lambda e, axis=-1: e.mean(axis) / corpus_variance, err,
                                              n_resamples=n_boot, seed=seed)
        fvu_claims.append(stats.verdict(corpus_fvu, direction="less", null=0.05,
                                        claim="S1b: reconstruction FVU on the task prompts < 5% (corpus variance)"))
    table = sense_latents(study, sae)
    kept = table["kept"].to_numpy(float)
    enough = len(kept) >= 10
    share = stats.bootstrap_interval(np.mean, kept, n_resamples=n_boot, seed=seed) if enough else None
    l0 = float((study.codes > 0).float().sum(-1).mean()) / sae.cfg.d_sae
    design = stats.Estimate(l0, l0, l0, 0.95, 0.0, len(x))
    return fvu_claims + [
        stats.verdict(share, direction="greater", null=0.93, claim="S2: > 93% of sense latents keep their "
                      "precision on unseen sentences",
                      preconditions={"at least 10 sense latents": (enough, f"{len(kept)} found")}),
        stats.verdict(design, direction="less", null=0.01, claim="S3: L0 / d_sae <= 1%",
                      preconditions={"a finding": (False, f"L0 / d_sae = {l0:.4f} is set by the SAE's design "
                                                          "(TopK k / d_sae), not measured")})]


# ------------------------------------------------------------------------------------------------------------------
# The second task (WiC) and the negative control (tweets)
# ------------------------------------------------------------------------------------------------------------------


def variant_table(labels: np.ndarray, preds: Mapping[str, np.ndarray], *, n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Accuracy of each variant (interval), its paired difference to "none" (interval, exact McNemar p) and the
    share of items whose prediction it changes."""
    c0, rows = preds["none"] == labels, {}
    for name, pred in preds.items():
        c = pred == labels
        acc = stats.bootstrap_interval(np.mean, c, n_resamples=n_boot, seed=seed)
        diff = stats.paired_difference(np.mean, c, c0, n_resamples=n_boot, seed=seed)
        rows[name] = {**_interval(acc), **_interval(diff, "Δ vs none"), "McNemar p": mcnemar_p(c, c0),
                      "changed predictions": float((pred != preds["none"]).mean())}
    return pd.DataFrame(rows).T


def wic_study(model, sae, pairs: Sequence, *, encoder=None, cache: bool | None = None,
              progress: bool = True) -> dict:
    """WiC judgments with each context annotated by the encoder's sense: none, the contexts the SAE flags (its
    reading of the word, `READ_FORMAT`, disagrees with the encoder's), both contexts, both with gold glosses.
    Returns labels, the SAE's context flags and each variant's calibrated predictions."""
    items, hook = wic_items(pairs), sae.cfg.hook_name
    run = read_prompts(model, [item_prompt(model, it, None, READ_FORMAT) for it in items], hook, fmt=None,
                       cache=cache, progress=progress)
    protos = prototypes(model, items, hook, fmt=READ_FORMAT, cache=cache, progress=progress)
    external = external_reading(items, encoder)
    with torch.no_grad():
        codes = sae.encode(run.acts.to(sae.W_enc.dtype)).float()
    reading = nearest_sense(codes, protos.encoded(sae), items, protos)
    flag = disagreement(reading, external, items, "sense") > 0
    chosen, gold = glosses(items, external.choice), [it.gold_gloss for it in items]
    notes = {"none": lambda i: (None, None), "external": lambda i: (chosen[2 * i], chosen[2 * i + 1]),
             "SAE trigger": lambda i: tuple(chosen[2 * i + c] if flag[2 * i + c] else None for c in (0, 1)),
             "gold": lambda i: (gold[2 * i], gold[2 * i + 1])}
    jobs = [(v, i) for v in notes for i in range(len(pairs))]
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    out = read_prompts(model, [wic_prompt(items[2 * i], items[2 * i + 1], notes[v](i)) for v, i in jobs], final,
                       fmt=WIC_FORMAT, cache=cache, progress=progress)
    logits = {v: out.logits[[j for j, (w, _) in enumerate(jobs) if w == v]] for v in notes}
    offset = calibration_offset(logits["none"])
    return {"labels": np.array([p.label for p in pairs]), "context_flags": flag,
            "preds": {v: predict(lg, offset) for v, lg in logits.items()}}


def tweet_control(model, texts: Sequence[str], labels: Sequence[int], *, seed: int = 0, cache: bool | None = None,
                  progress: bool = True) -> dict:
    """Tweet sentiment with one random noun glossed (its most frequent sense): glossing a word the label does not
    hinge on should change nothing. Returns the items, labels and both variants' calibrated predictions."""
    items = tweet_items(texts, labels, seed=seed)
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    notes = [None] * len(items) + [it.senses[0].gloss for it in items]
    run = read_prompts(model, [item_prompt(model, it, n, TWEET_FORMAT) for it, n in zip(items * 2, notes)], final,
                       fmt=TWEET_FORMAT, cache=cache, progress=progress)
    none, glossed = run.logits[:len(items)], run.logits[len(items):]
    offset = calibration_offset(none)
    return {"items": items, "labels": np.array([it.label for it in items]),
            "preds": {"none": predict(none, offset), "random word glossed": predict(glossed, offset)}}


def summarise(study: Study) -> dict[str, float]:
    """Headline numbers of one study (for record_findings)."""
    pol = policies(study)
    acc = {name: float((p.outcome(study) == study.labels).mean()) for name, p in pol.items()}
    return {"n_items": len(study.items), "flag_rate_sae": float(study.flags("sae").mean()),
            "flag_rate_raw": float(study.flags("raw").mean()),
            **{f"accuracy: {k}": round(v, 4) for k, v in acc.items()}}


__all__ = [
    "DETECTORS",
    "SENSE_MIN_FIRES",
    "SENSE_PRECISION",
    "VARIANTS",
    "Policy",
    "Study",
    "build_study",
    "claims",
    "detector_table",
    "macro_f1",
    "mcnemar_p",
    "policies",
    "policy_table",
    "preconditions",
    "random_triggering",
    "reading_table",
    "run_study",
    "score_variants",
    "sense_latents",
    "side_claims",
    "summarise",
    "top_k_mask",
    "tweet_control",
    "variant_table",
    "wic_study",
]
