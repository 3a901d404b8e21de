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

from saelab.checks import resolve_hook

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
                           hook: str | None = None, batch_size: int = 8, exclude_special_tokens: bool = True,
                           progress: bool = True) -> dict[str, float]:
    """Clean, SAE-spliced and zero-ablated next-token loss and KL, and the two scores.

    model: a TransformerLens model (TransformerBridge) with `run_with_hooks`; tokens [batch, seq] (+ mask) or
    texts. The SAE reconstruction (or zeros) replaces the activation at `hook` (default: the SAE's `hook_name`) on real,
    non-special positions; BOS/EOS/PAD positions keep their clean activation, as in SAEBench, and padding is never
    counted. CE counts the replaced positions whose next token is real; KL(clean || patched) counts every replaced
    position.
    """
    hook = resolve_hook(model, hook, sae)  # the model would ignore an unknown name: a score of nothing
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
            hooks = [] if kind == "clean" else [(hook, _splice_hook(sae, splice, kind))]
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


__all__ = [
    "l0", "l1", "mse", "explained_variance", "cossim", "l2_ratio", "relative_reconstruction_bias",
    "feature_density", "dead_latents", "frac_alive", "activation_density_histogram", "RunningCoreMetrics",
    "core_metrics", "reconstruction_metrics", "ce_loss_score", "kl_div_score",
]
