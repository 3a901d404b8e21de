"""notebook 05: scoring SAEs and baselines by PS-Eval, bootstrap intervals, one pair explained.

`evaluate_sae` / `evaluate_raw` (units standardised on the training pairs) / `random_sae_like` score codes read
from a `saelab.polysemy.ProbeActivations` by the top-1 rule (and its Jaccard@k and ROC variants);
`metric_estimate` / `metric_difference` (and their tuple and dict forms `bootstrap_ci` / `paired_difference`) put
`saelab.stats` bootstrap intervals on the metrics; `explain_pair` shows the top latents of one word in two contexts
(the explorer widget's engine). The notebook's tables, figure and verdicts live in `saelab.polysemy_claims`, the
raw-hidden-state ceiling probe in `saelab.polysemy_ceiling`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from saelab import stats
from saelab.metrics import core_metrics
from saelab.polysemy import (
    METRICS,
    READS,
    SCORES,
    TEMPLATE,
    ProbeActivations,
    RocCurve,
    code_cosine,
    confusion,
    covering,
    extract_probe,
    jaccard_at_k,
    metrics_from_confusion,
    prepare_pairs,
    render_prompt,
    roc,
    top_latents,
)
from saelab.sae import SAE
from saelab.stats import Estimate, bootstrap_interval
from saelab.tasks import WiCPair

# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PSEvalResult:
    """PS-Eval of one code (an SAE, a random SAE, raw units) on one probe set and reading."""

    name: str
    read: str
    labels: np.ndarray  # [n_pairs]
    pos: np.ndarray  # [n_pairs] part of speech ("?" when unknown)
    top1: np.ndarray  # [n_pairs, 2] top latent of each context; -1 = no latent active
    top1_act: np.ndarray  # [n_pairs, 2]
    same: np.ndarray  # [n_pairs] the top-1 decision
    jaccard: np.ndarray  # [n_pairs] Jaccard@k of the top-k latents
    cosine: np.ndarray  # [n_pairs] cosine of the two codes
    k: int
    confusion: dict[str, int]
    metrics: dict[str, float]
    n_no_active: int  # contexts whose code had no active latent (counted "different" from anything)
    skipped: dict[str, int]
    n_input: int
    hook: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    core: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> dict[str, Any]:
        """Confusion matrix and metrics of the pairs in `mask` (e.g. one part of speech)."""
        cm = confusion(self.labels[mask], self.same[mask])
        return {"n": int(mask.sum()), **cm, **metrics_from_confusion(cm)}

    def by_pos(self) -> dict[str, dict[str, Any]]:
        """Metrics per part of speech."""
        return {p: self.subset(self.pos == p) for p in sorted(set(self.pos.tolist()))}

    def roc(self, score: str = "cosine") -> RocCurve:
        """The threshold sweep over a pair score: "cosine" (of the codes) or "jaccard" (Jaccard@k)."""
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        return roc(self.labels, getattr(self, score))

    def _auroc(self, score: str) -> float:
        return self.roc(score).auroc if len(set(self.labels.tolist())) == 2 else float("nan")

    def jaccard_decision(self, threshold: float = 0.5) -> dict[str, Any]:
        """Metrics of the top-k variant: "same" when Jaccard@k >= threshold."""
        cm = confusion(self.labels, self.jaccard >= threshold)
        return {**cm, **metrics_from_confusion(cm)}

    def row(self) -> dict[str, Any]:
        """One flat line for a results table."""
        out = {"name": self.name, "hook": self.hook, "read": self.read, "n_pairs": len(self),
               "n_skipped": sum(self.skipped.values()), **self.metrics, **self.confusion,
               "auroc_cosine": self._auroc("cosine"), f"auroc_jaccard@{self.k}": self._auroc("jaccard"),
               "n_no_active": self.n_no_active}
        out.update({key: value for key, value in self.core.items()})
        return out

    def take(self, mask: np.ndarray, name: str | None = None) -> PSEvalResult:
        """The same scores restricted to the pairs where `mask` is True (e.g. the WiC-like subset), metrics
        recomputed; diagnostics and core metrics are those of the whole set."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != self.labels.shape:
            raise ValueError(f"mask must be one bool per pair ({len(self)}), got {mask.dtype} {mask.shape}.")
        cm = confusion(self.labels[mask], self.same[mask])
        arrays = {f: getattr(self, f)[mask] for f in ("labels", "pos", "top1", "top1_act", "same", "jaccard", "cosine")}
        return dataclasses.replace(self, **arrays, name=name or self.name, confusion=cm,
                                   metrics=metrics_from_confusion(cm), n_no_active=int((arrays["top1"] < 0).sum()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.3f}" for k, v in self.metrics.items())
        return f"PSEvalResult({self.name!r}, read={self.read!r}, {len(self)} pairs: {shown})"


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: the number of top latents compared must be a positive integer (e.g. 5).")
    return int(k)


def evaluate_codes(codes: torch.Tensor, labels: Sequence[int] | np.ndarray, *, name: str = "codes",
                   read: str = "template", pos: Sequence[str] | None = None, k: int = 5,
                   require_active: bool = True, skipped: dict[str, int] | None = None, n_input: int | None = None,
                   hook: str | None = None) -> PSEvalResult:
    """Score codes ``[n_pairs, 2, d]`` (one per context) by PS-Eval's top-1 rule and its variants."""
    if codes.ndim != 3 or codes.shape[1] != 2:
        raise ValueError(f"codes must be [n_pairs, 2 contexts, d], got {tuple(codes.shape)}")
    check_k(k)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(codes):
        raise ValueError(f"{len(codes)} code pairs but {len(labels)} labels")
    ids, values = top_latents(codes, 1, require_active)
    top1, top1_act = ids[..., 0].numpy(), values[..., 0].numpy()
    same = (top1[:, 0] == top1[:, 1]) & (top1[:, 0] >= 0)
    cm = confusion(labels, same)
    return PSEvalResult(
        name=name, read=read, labels=labels,
        pos=np.asarray(pos if pos is not None else ["?"] * len(labels)), top1=top1, top1_act=top1_act,
        same=same, jaccard=jaccard_at_k(codes[:, 0], codes[:, 1], k, require_active),
        cosine=code_cosine(codes[:, 0], codes[:, 1]), k=k, confusion=cm, metrics=metrics_from_confusion(cm),
        n_no_active=int((top1 < 0).sum()), skipped=dict(skipped or {}),
        n_input=n_input if n_input is not None else len(labels), hook=hook,
    )


@torch.no_grad()
def encode(sae, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SAE codes of activations x [..., d_in], in batches."""
    flat = x.reshape(-1, x.shape[-1])
    parts = [sae.encode(chunk.to(sae.device, sae.dtype)).float().cpu() for chunk in flat.split(batch_size)]
    return torch.cat(parts).reshape(*x.shape[:-1], -1)


def winner_cosines(sae, top1: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Diagnostics: cosine of the two winning latents' encoder columns and decoder rows, by label.

    Per label: the share of pairs whose winners coincide, and the mean cosines over the pairs whose winners differ
    (identical winners have cosine 1 by definition and are left out of the means).
    """
    W_enc = sae.W_enc.detach().double().cpu()
    W_dec = sae.W_dec.detach().double().cpu()
    enc = torch.nn.functional.normalize(W_enc, dim=0)
    dec = torch.nn.functional.normalize(W_dec, dim=1)
    out = {}
    for label, name in ((1, "same_sense"), (0, "different_sense")):
        rows = top1[(labels == label) & (top1 >= 0).all(axis=1)]
        differ = rows[rows[:, 0] != rows[:, 1]]
        a, b = torch.as_tensor(differ[:, 0]), torch.as_tensor(differ[:, 1])
        out[name] = {
            "n": int((labels == label).sum()),
            "share_same_winner": float((rows[:, 0] == rows[:, 1]).mean()) if len(rows) else float("nan"),
            "encoder_cosine": float((enc[:, a] * enc[:, b]).sum(0).mean()) if len(differ) else float("nan"),
            "decoder_cosine": float((dec[a] * dec[b]).sum(1).mean()) if len(differ) else float("nan"),
        }
    return out


def evaluate_sae(sae, probe_acts: ProbeActivations, read: str = "template", *, name: str | None = None,
                 hook: str | None = None, k: int = 5, core: bool = True) -> PSEvalResult:
    """PS-Eval of an SAE: encode both contexts at its hook, apply the top-1 rule, add diagnostics and MSE / L0.

    `core` adds the SAE's reconstruction metrics on the probe rows (both reads of every prompt): mse, l0 and
    explained_variance, the SAE's position on the sparsity-fidelity frontier for these very tokens.
    """
    hook = hook or sae.cfg.hook_name
    if hook is None:
        raise ValueError("The SAE records no hook_name: pass hook=.")
    probe = probe_acts.probe
    codes = encode(sae, probe_acts.pair_acts(hook, read))
    result = evaluate_codes(codes, probe.labels, name=name or f"{sae.cfg.architecture} {sae.cfg.d_sae}", read=read,
                            pos=probe.pos, k=k, skipped=probe.skip_counts(), n_input=probe.n_input, hook=hook)
    result.diagnostics = winner_cosines(sae, result.top1, result.labels)
    if core:
        metrics = core_metrics(sae, probe_acts.rows(hook), progress=False)
        result.core = {key: float(metrics[key]) for key in ("mse", "l0", "explained_variance")}
    return result


def unit_scaler(probe_acts: ProbeActivations, hook: str, fit: np.ndarray, read: str = "template"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each unit of `hook`, over both contexts of the pairs where `fit` is True
    (the training pairs: the scaler never sees a test pair). A constant unit gets std 1."""
    fit = np.asarray(fit)
    if fit.dtype != bool or fit.shape != (len(probe_acts.probe),) or fit.sum() < 2:
        raise ValueError(f"fit must be one bool per pair ({len(probe_acts.probe)}) marking at least two pairs to "
                         f"fit the scaler on, got dtype {fit.dtype}, shape {fit.shape}.")
    x = probe_acts.pair_acts(hook, read)[torch.as_tensor(fit)].reshape(-1, probe_acts.acts[hook].shape[-1]).double()
    std = x.std(0)
    return x.mean(0).float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def evaluate_raw(probe_acts: ProbeActivations, hook: str, read: str = "template", *, k: int = 5,
                 name: str = "raw units", fit: np.ndarray | None = None) -> PSEvalResult:
    """The raw-units baseline: the argmax over the hook's own dimensions, scored by the same rule.

    `fit` (one bool per pair, the training pairs) standardises each unit first, with the mean and standard
    deviation of those pairs (`unit_scaler`). Without it a residual stream's few massive dimensions win the argmax
    in nearly every context (specificity near 0, recall near 1): the baseline is then degenerate, not weak.
    """
    probe = probe_acts.probe
    x = probe_acts.pair_acts(hook, read).float()
    if fit is not None:
        mean, std = unit_scaler(probe_acts, hook, fit, read)
        x = (x - mean) / std
    return evaluate_codes(x, probe.labels, name=name, read=read,
                          pos=probe.pos, k=k, require_active=False, skipped=probe.skip_counts(),
                          n_input=probe.n_input, hook=hook)


def random_sae_like(sae, seed: int = 0, keep_b_dec: bool = True):
    """A randomly initialised SAE of the same shape and architecture (untrained: the baseline the paper lacked).

    Encoder and decoder are saelab's random initialisation. With `keep_b_dec` (default) the decoder bias is the
    trained SAE's: saelab's trainer starts b_dec at the data's geometric median, so a random SAE at step 0 is
    centred on the data too. Without it (b_dec = 0), a residual stream with a few huge dimensions sends nearly
    every token to the same random direction, a much weaker baseline.
    """
    cfg = dataclasses.replace(sae.cfg, metadata={"random_baseline_seed": seed, "kept_b_dec": keep_b_dec},
                              dataset={}, normalize_activations="none")
    random = SAE(cfg, seed=seed).eval()
    if keep_b_dec:
        with torch.no_grad():
            random.b_dec.copy_(sae.b_dec.detach())
    return random


def ps_eval(model, sae, pairs: Sequence[WiCPair], *, read: str = "template", template: str = TEMPLATE,
            multi_token: str = "skip", k: int = 5, cache: bool = False, progress: bool = True) -> PSEvalResult:
    """PS-Eval of one SAE on WiC pairs in one call: prepare the prompts, extract at the SAE's hook, score."""
    probe = prepare_pairs(pairs, model.tokenizer, template=template, multi_token=multi_token)
    acts = extract_probe(model, probe, sae.cfg.hook_name, cache=cache, progress=progress)
    return evaluate_sae(sae, acts, read, k=k)


# ----------------------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over pairs
# ----------------------------------------------------------------------------------------------------------------


def _statistic(metric: str):
    """A metric of (labels, top-1 decisions) [..., n] along the last axis, for saelab.stats (NaN when undefined)."""
    def statistic(labels: np.ndarray, same: np.ndarray, axis: int = -1) -> np.ndarray:
        lab, pred = np.moveaxis(labels, axis, -1) == 1, np.moveaxis(same, axis, -1).astype(bool)
        tp, fn = (lab & pred).sum(-1), (lab & ~pred).sum(-1)
        fp, tn = (~lab & pred).sum(-1), (~lab & ~pred).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"accuracy": (tp + tn) / (tp + fn + fp + tn), "precision": tp / (tp + fp),
                    "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn), "specificity": tn / (tn + fp)}[metric]
    return statistic


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def metric_estimate(result: PSEvalResult, metric: str = "specificity", *, n_boot: int = 2000, level: float = 0.95,
                    seed: int = 0) -> Estimate:
    """A metric with its percentile bootstrap interval over pairs (`saelab.stats.bootstrap_interval`; resamples
    where the metric is undefined, e.g. specificity with no different-sense pair drawn, are dropped)."""
    _check_metric(metric)
    return bootstrap_interval(_statistic(metric), result.labels, result.same, level=level, n_resamples=n_boot,
                              seed=seed)


def metric_difference(a: PSEvalResult, b: PSEvalResult, metric: str = "specificity", *, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> Estimate:
    """metric(a) - metric(b) on the same pairs, with a paired bootstrap interval (the same resampled pairs for both):
    the estimate to hand to `saelab.stats.verdict`."""
    _check_metric(metric)
    if len(a) != len(b) or not np.array_equal(a.labels, b.labels):
        raise ValueError(f"{a.name!r} and {b.name!r} were scored on different pairs; compare results of one probe set.")
    return stats.paired_difference(_statistic(metric), (a.labels, a.same), (b.labels, b.same), level=level,
                            n_resamples=n_boot, seed=seed)


def bootstrap_ci(result: PSEvalResult, metric: str = "specificity", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling pairs: `metric_estimate`'s (low, high)."""
    est = metric_estimate(result, metric, n_boot=n_boot, level=level, seed=seed)
    return est.low, est.high


def paired_difference(a: PSEvalResult, b: PSEvalResult, metric: str = "specificity", n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """metric(a) - metric(b) on the same pairs, with a paired bootstrap interval (the same resampled pairs for both).

    The interval excluding 0 is the evidence this module's notebook calls a difference; `metric_difference` gives
    the same as an `Estimate` for `saelab.stats.verdict`.
    """
    est = metric_difference(a, b, metric, n_boot=n_boot, level=level, seed=seed)
    return {"difference": a.metrics[metric] - b.metrics[metric], "low": est.low, "high": est.high}


# ----------------------------------------------------------------------------------------------------------------
# One pair, explained (the notebook's worked example and the explorer widget)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PairExplanation:
    """The top latents of two contexts of one word, side by side."""

    word: str
    prompts: tuple[str, str]
    target_token: str
    read: str
    top: tuple[list[tuple[int, float]], list[tuple[int, float]]]  # per context: (latent, activation), best first
    top1: tuple[int, int]  # -1 = no latent active
    same: bool
    jaccard: float
    label: int | None = None

    @property
    def shared(self) -> list[int]:
        """Latents in both contexts' top lists."""
        second = {latent for latent, _ in self.top[1]}
        return [latent for latent, _ in self.top[0] if latent in second]

    def table(self) -> list[dict[str, Any]]:
        """Rows of rank, latent and activation for both contexts (for pandas or printing)."""
        rows = []
        for rank in range(max(len(self.top[0]), len(self.top[1]))):
            row: dict[str, Any] = {"rank": rank + 1}
            for c in range(2):
                latent, act = self.top[c][rank] if rank < len(self.top[c]) else (None, None)
                row[f"latent_{c + 1}"], row[f"activation_{c + 1}"] = latent, act
            rows.append(row)
        return rows


def explain_pair(model, sae, context_1: str, context_2: str, word: str, *, k: int = 8, read: str = "template",
                 template: str = TEMPLATE, label: int | None = None, hook: str | None = None) -> PairExplanation:
    """The top-k latents of `word` in two contexts, as PS-Eval reads them.

    Raises ValueError with what to fix when the word is empty, absent from a context, or more than one token.
    """
    if read not in READS:
        raise ValueError(f"read must be one of {READS}, got {read!r}")
    check_k(k)
    wanted = {"context 1": "a sentence that contains the word", "context 2": "a sentence that contains the word",
              "word": "a word that appears in both contexts"}
    for name, value in zip(wanted, (context_1, context_2, word)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is empty: type {wanted[name]}.")
    word = word.strip()
    pair = WiCPair(word=word, pos="", context_1=context_1.strip(), context_2=context_2.strip(),
                   label=-1 if label is None else int(label))
    probe = prepare_pairs([pair], model.tokenizer, template=template, require_labels=False)
    if probe.skipped:
        raise ValueError(_explain_skip(probe.skipped[0].reason, word, pair, model.tokenizer, template))
    hook = hook or sae.cfg.hook_name
    acts = extract_probe(model, probe, hook, cache=False, progress=False)
    codes = encode(sae, acts.pair_acts(hook, read))[0]  # [2, d_sae]
    ids, values = top_latents(codes, k)
    top = tuple([(int(i), float(v)) for i, v in zip(ids[c].tolist(), values[c].tolist()) if i >= 0]
                for c in range(2))
    top1 = (int(ids[0, 0]), int(ids[1, 0]))
    return PairExplanation(word=word, prompts=(probe.prompts[0], probe.prompts[1]),
                           target_token=probe.target_tokens[0], read=read, top=top, top1=top1,
                           same=top1[0] == top1[1] and top1[0] >= 0,
                           jaccard=float(jaccard_at_k(codes[:1], codes[1:], k)[0]), label=label)


def _explain_skip(reason: str, word: str, pair: WiCPair, tokenizer, template: str = TEMPLATE) -> str:
    if reason.startswith("target absent"):
        c = reason[-1]
        context = pair.context_1 if c == "1" else pair.context_2
        return (f"The word {word!r} does not occur as a whole word in context {c} ({context[:80]!r}). "
                "Type a word that appears in both contexts.")
    if reason == "multi-token target":
        # the tokens that cover the template's copy of the word, as prepare_pairs found them
        text, _, start = render_prompt(template, pair.context_1, word)
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        covered = covering([tuple(o) for o in encoded["offset_mapping"]], start, start + len(word))
        pieces = [tokenizer.decode([encoded["input_ids"][i]]) for i in covered]
        return (f"{word!r} is {len(pieces)} tokens for this model ({pieces}); PS-Eval reads one token. "
                "Pick a word that is a single token.")
    return f"Cannot evaluate this pair: {reason}."


__all__ = [
    "PSEvalResult",
    "PairExplanation",
    "bootstrap_ci",
    "check_k",
    "encode",
    "evaluate_codes",
    "evaluate_raw",
    "evaluate_sae",
    "explain_pair",
    "metric_difference",
    "metric_estimate",
    "paired_difference",
    "ps_eval",
    "random_sae_like",
    "unit_scaler",
    "winner_cosines",
]
