"""notebook 03: ClassifSAE (arXiv 2506.23951): a TopK SAE whose first latents feed a linear classifier head.

The SAE explains a classifier from one hidden vector per sentence (see `saelab.classifier`). Its first
`n_concepts` latents, z_class, are reserved for the decision: a linear head maps z_class to class logits and is
trained jointly with the SAE against the classifier's *predicted* labels. The loss, on a batch of B vectors:

    L = lambda_mse * L_mse + lambda_ar * L_ar + lambda_cls * CE(head(z_class), predicted label)

    L_mse  per item: sum over dims of (x_hat - x)^2, divided by the item's distance ||x - mean_batch(x)||
    L_ar   activation-rate loss: for each latent j, drop its top floor(B * tau) activations in the batch and
           sum the rest; sum over latents, divide by B. A latent may fire freely on a tau share of a batch.

In the second half of training z_class is detached before decoding, so that the reconstruction stops shaping
the class latents. Everything else (TopK with k = 10, d_sae = 2 * d_in, unit-norm decoder rows, W_enc = W_dec^T at
start, Adam with a cosine schedule) is saelab's ordinary trainer: ClassifSAE plugs into `saelab.train_sae` through
its `extra_loss` / `extra_modules` hooks, with the normalised reconstruction term replacing the built-in "mse".

Anchor defaults (`ClassifSAEConfig()` and `anchor_train_config`): lambdas 0.02 / 0.02 / 1, tau = 0.1, 20 class
latents, lr 5e-5 cosine to 5e-7, and the paper's dead-latent revival, **ghost grads** (its config sets
`use_ghost_grads=True` with a dead window of 100 steps; the loss is lambda_mse * (L_mse + L_ghost)): a latent that
has not fired for `dead_window` steps gets gradient through an exponential of its pre-activation, fitted to the
residual (`ghost_grad_loss`, SAELens 3.13's rule, which the paper copies). saelab's AuxK stays off.

Two deviations, on purpose, both about scale:

- b_dec starts at the data mean, not 0. Gemma 3's residual stream carries a constant of about 33,000 in one
  dimension at the last block; from b_dec = 0 the latents would have to carry it (the paper's models have no such
  massive activation). `anchor_train_config(b_dec_init="zeros")` restores the paper's choice.
- inputs are scaled by their **centred** norm during training (`normalize_activations="centered"`: the average
  distance to the data mean becomes sqrt(d_in); the factor is folded back into the weights afterwards). L_mse and
  L_ar grow linearly with the activations' scale while the cross-entropy does not, so the paper's weights only
  balance at its models' scale. Scaling by the raw norm (SAELens' "expected_average_only_in", still offered)
  lets Gemma's massive dimension set the scale and shrinks the informative part to ~4 of ~25, so the head's
  cross-entropy alone shapes z_class; scaling by the centred norm gives lambda_mse * L_mse ~ 0.5 at the start, near
  the paper's balance. On raw vectors (`"none"`, distances to the mean of ~5,000) the reconstruction term swamps
  the head and the class latents die (measured on tweet-sentiment: z_class activation rate 0.0-0.2%).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saelab.config import config_from_dict
from saelab.sae import SAE, SAEConfig, SAEOutput
from saelab.sae_files import load_extra_weights
from saelab.train import TrainConfig, train_sae
from saelab.train_data import Batch, TensorSource

SCALINGS = ("centered", "expected_average_only_in", "none")


@dataclass
class ClassifSAEConfig:
    """ClassifSAE's architecture and loss weights; the defaults are the paper's, except the input scaling
    ("centered", see the module docstring)."""

    n_classes: int
    n_concepts: int = 20  # latents reserved for the decision (z_class): the first n_concepts of the SAE
    k: int = 10
    expansion: int = 2  # d_sae = expansion * d_in
    lambda_mse: float = 0.02
    lambda_ar: float = 0.02
    lambda_cls: float = 1.0
    activation_rate: float = 0.1  # tau: the share of a batch on which a latent may fire without penalty
    detach_after: float = 0.5  # fraction of training after which z_class is detached before decoding
    normalize_activations: str = "centered"  # or "expected_average_only_in" or "none" (see the module docstring)
    ghost_grads: bool = True  # the paper's dead-latent revival
    dead_window: int = 100  # steps without firing after which a latent counts as dead (the paper's window)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"a classifier head needs at least 2 classes, got n_classes={self.n_classes}")
        if self.n_concepts < 1:
            raise ValueError(f"n_concepts must be positive, got {self.n_concepts}")
        if not 0 < self.activation_rate <= 1:
            raise ValueError(f"activation_rate (tau) must be in (0, 1], got {self.activation_rate}")
        if not 0 <= self.detach_after <= 1:
            raise ValueError(f"detach_after must be a fraction in [0, 1], got {self.detach_after}")
        if self.normalize_activations not in SCALINGS:
            raise ValueError(f"normalize_activations must be one of {SCALINGS}, got {self.normalize_activations!r}")
        if self.dead_window < 1:
            raise ValueError(f"dead_window must be at least one step, got {self.dead_window}")

    def sae_config(self, d_in: int, **extra: Any) -> SAEConfig:
        d_sae = self.expansion * d_in
        if self.n_concepts > d_sae:
            raise ValueError(f"n_concepts={self.n_concepts} exceeds d_sae={d_sae}")
        scaling = "none" if self.normalize_activations == "centered" else self.normalize_activations
        return SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=self.k, normalize_activations=scaling,
                         **extra)

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifSAEConfig:
        return config_from_dict(cls, d)


def anchor_train_config(n_steps: int, batch_size: int = 256, *, lr: float = 5e-5, min_lr: float = 5e-7,
                        seed: int = 0, b_dec_init: str = "mean", log_every: int = 25) -> TrainConfig:
    """The paper's optimiser settings: Adam, lr cosine-decayed over the whole run from `lr` to `min_lr`, no
    warm-up, no gradient clipping. saelab's AuxK is off: the paper revives dead latents with ghost grads, which
    `ClassifSAEConfig(ghost_grads=True)` adds to the loss."""
    return TrainConfig(n_steps=n_steps, batch_size=batch_size, lr=lr, min_lr=min_lr, decay="cosine",
                       decay_fraction=1.0, warmup_steps=0, aux_k_coefficient=0.0, b_dec_init=b_dec_init,
                       seed=seed, log_every=log_every, max_grad_norm=None)


paper_train_config = anchor_train_config  # the same recipe under the notebooks' word for it: "the paper"


# ------------------------------------------------------------------------------------------------------------------
# The loss terms
# ------------------------------------------------------------------------------------------------------------------


def normalized_reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over the batch of ||x_hat - x||^2 / ||x - mean_batch(x)|| (the paper's "dense_batch" MSE)."""
    distance = (x - x.mean(0, keepdim=True)).norm(dim=-1)
    return ((x_hat - x).pow(2).sum(-1) / (distance + eps)).mean()


def activation_rate_loss(latents: torch.Tensor, rate: float) -> torch.Tensor:
    """(1/B) * sum_j sum_{i not in T_j} z_ij, with T_j latent j's floor(B * rate) largest activations in the batch."""
    batch = latents.shape[0]
    free = int(batch * rate)
    if free == 0:
        return latents.sum() / batch
    with torch.no_grad():
        top = latents.topk(min(free, batch), dim=0).indices
        penalised = torch.ones_like(latents, dtype=torch.bool).scatter_(0, top, False)
    return (latents * penalised).sum() / batch


def _dense_batch_mse(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise squared error [B, d] divided by each target's distance to the batch mean (SAELens' dense_batch)."""
    distance = (target - target.mean(0, keepdim=True)).norm(dim=-1, keepdim=True)
    return (pred - target).pow(2) / (distance + eps)


def ghost_grad_loss(x: torch.Tensor, x_hat: torch.Tensor, pre_acts: torch.Tensor, W_dec: torch.Tensor,
                    dead: torch.Tensor) -> torch.Tensor:
    """Ghost grads (SAELens 3.13, as the paper uses them): the dead latents, through exp(pre-activation), decode
    a vector rescaled to half the residual's norm; its dense-batch-normalised error against the residual, reweighted
    elementwise to the size of the reconstruction error, averaged. Only the dead latents receive its gradient.

    The exponential is taken after subtracting each row's largest dead pre-activation (detached): the per-row norm
    rescaling undoes any per-row factor, so value and gradient are the paper's, without overflow.
    """
    residual = x - x_hat
    h = pre_acts[:, dead]
    h = h - h.max(dim=1, keepdim=True).values.detach()
    ghost = torch.exp(h) @ W_dec[dead]
    scale = residual.norm(dim=-1) / (1e-6 + 2 * ghost.norm(dim=-1))
    ghost = ghost * scale[:, None].detach()
    ghost_error = _dense_batch_mse(ghost, residual.detach())
    weight = (_dense_batch_mse(x_hat, x) / (ghost_error + 1e-6)).detach()
    return (weight * ghost_error).mean()


class ClassifSAELoss:
    """The `extra_loss` for `saelab.train_sae`: normalised reconstruction ("mse", replacing the built-in term),
    activation-rate loss and the head's cross-entropy, with z_class detached before decoding late in training; with
    `cfg.ghost_grads`, ghost grads for the latents that have not fired for `cfg.dead_window` steps (weighted by
    lambda_mse, as the paper's loss is lambda_mse * (L_mse + L_ghost))."""

    def __init__(self, cfg: ClassifSAEConfig, head: nn.Linear, n_steps: int, label_key: str = "label"):
        self.cfg, self.head, self.n_steps, self.label_key = cfg, head, int(n_steps), label_key
        self.steps_since_fired: torch.Tensor | None = None
        self.dead_log: list[int] = []  # number of dead latents at each step

    def detached(self, step: int) -> bool:
        return step >= int(self.cfg.detach_after * self.n_steps)

    def _dead(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents dead before this step; then the firing counters move on with this batch."""
        if self.steps_since_fired is None:
            self.steps_since_fired = torch.zeros(latents.shape[1], dtype=torch.long, device=latents.device)
        dead = self.steps_since_fired >= self.cfg.dead_window
        with torch.no_grad():
            self.steps_since_fired += 1
            self.steps_since_fired[(latents > 0).any(0)] = 0
        self.dead_log.append(int(dead.sum()))
        return dead

    def __call__(self, sae: SAE, batch: Batch, out: SAEOutput, step: int) -> dict[str, torch.Tensor]:
        cfg, z = self.cfg, out.latents
        z_class = z[:, : cfg.n_concepts]
        if self.detached(step):
            z = torch.cat([z_class.detach(), z[:, cfg.n_concepts:]], dim=1)
        x_hat = sae.decode(z)
        labels = batch.side[self.label_key].long()
        terms = {
            "mse": cfg.lambda_mse * normalized_reconstruction_loss(batch.acts, x_hat),
            "activation_rate": cfg.lambda_ar * activation_rate_loss(out.latents, cfg.activation_rate),
            "classifier": cfg.lambda_cls * F.cross_entropy(self.head(z_class), labels),
        }
        dead = self._dead(out.latents.detach())
        if cfg.ghost_grads and dead.any():
            terms["ghost_grads"] = cfg.lambda_mse * ghost_grad_loss(batch.acts, x_hat, out.pre_acts, sae.W_dec, dead)
        return terms


def centered_scale(x: torch.Tensor) -> float:
    """The factor that makes the average distance to the mean sqrt(d_in): sqrt(d_in) / mean ||x - mean(x)||."""
    distance = float((x - x.mean(0)).norm(dim=1).mean())
    if distance <= 0:
        raise ValueError("every vector is the same: the centred norm is 0, so there is nothing to scale")
    return x.shape[1] ** 0.5 / distance


def train_centered(vectors: torch.Tensor, sae_cfg: SAEConfig, train_cfg: TrainConfig, *,
                   side: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> SAE:
    """`saelab.train_sae` on vectors scaled by `centered_scale`, the factor folded back into the weights afterwards
    (so the SAE reads raw vectors) and recorded as metadata "activation_scaling_factor" (scaling "centered")."""
    scale = centered_scale(vectors)
    sae = train_sae(TensorSource(vectors * scale, side=side), sae_cfg, train_cfg, **kwargs)
    sae.fold_activation_norm_scaling_factor(scale)
    sae.cfg.metadata.update(activation_scaling_factor=scale, activation_scaling="centered")
    return sae


# ------------------------------------------------------------------------------------------------------------------
# The trained model
# ------------------------------------------------------------------------------------------------------------------


class ClassifSAE:
    """A trained ClassifSAE: the SAE, its head, and the config. z_class = the first `n_concepts` latents."""

    def __init__(self, sae: SAE, head: nn.Linear, cfg: ClassifSAEConfig):
        if head.in_features != cfg.n_concepts or head.out_features != cfg.n_classes:
            raise ValueError(f"the head maps {head.in_features} -> {head.out_features} but the config says "
                             f"{cfg.n_concepts} concepts -> {cfg.n_classes} classes")
        self.sae, self.head, self.cfg = sae.eval(), head.eval(), cfg

    @property
    def d_in(self) -> int:
        return self.sae.cfg.d_in

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"this ClassifSAE reads vectors of width d_in={self.d_in}; got shape {tuple(x.shape)} "
                             "(vectors from another model or hook?)")
        return x

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """All latents [n, d_sae]."""
        return self.sae.encode(self._check(x))

    @torch.no_grad()
    def concepts(self, x: torch.Tensor) -> torch.Tensor:
        """z_class [n, n_concepts]."""
        return self.encode(x)[:, : self.cfg.n_concepts]

    @torch.no_grad()
    def decode_concepts(self, z_class: torch.Tensor) -> torch.Tensor:
        """A hidden vector from z_class alone: z_class @ W_dec[:n_concepts] + b_dec."""
        return z_class.to(self.sae.dtype) @ self.sae.W_dec[: self.cfg.n_concepts] + self.sae.b_dec

    @torch.no_grad()
    def head_predict(self, x: torch.Tensor) -> torch.Tensor:
        """The head's own class prediction from z_class."""
        return self.head(self.concepts(x)).argmax(-1)

    def save(self, folder: str | Path) -> Path:
        """SAELens layout for the SAE, the head in extra_weights.safetensors, this config in cfg.json's metadata."""
        self.sae.cfg.metadata["classifsae"] = self.cfg.to_dict()
        return self.sae.save(folder, extra_modules={"head": self.head})

    @classmethod
    def load(cls, folder: str | Path) -> ClassifSAE:
        sae = SAE.load(folder)
        if "classifsae" not in sae.cfg.metadata:
            raise ValueError(f"{folder} holds an SAE without ClassifSAE metadata (not saved by ClassifSAE.save)")
        cfg = ClassifSAEConfig.from_dict(sae.cfg.metadata["classifsae"])
        head = nn.Linear(cfg.n_concepts, cfg.n_classes)
        head.load_state_dict(load_extra_weights(folder)["head"])
        return cls(sae, head, cfg)

    def __repr__(self) -> str:
        return (f"ClassifSAE(d_in={self.d_in}, d_sae={self.sae.cfg.d_sae}, k={self.cfg.k}, "
                f"z_class={self.cfg.n_concepts}, classes={self.cfg.n_classes})")


def train_classifsae(vectors: torch.Tensor, predicted_labels: torch.Tensor | np.ndarray,
                     cfg: ClassifSAEConfig, train_cfg: TrainConfig | None = None, *, n_steps: int = 1000,
                     hook_name: str | None = None, model_name: str | None = None,
                     dataset: dict[str, Any] | None = None, progress: bool = True) -> ClassifSAE:
    """Train ClassifSAE on sentence vectors [n, d_in] and the classifier's predicted labels [n].

    train_cfg: saelab TrainConfig (default: `anchor_train_config(n_steps)` with the seed 0).
    """
    vectors = torch.as_tensor(vectors).float()
    labels = torch.as_tensor(np.asarray(predicted_labels), dtype=torch.long)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be [n_sentences, d_in], got shape {tuple(vectors.shape)}")
    if len(labels) != len(vectors):
        raise ValueError(f"{len(labels)} predicted labels for {len(vectors)} vectors")
    if len(labels) and (labels.min() < 0 or labels.max() >= cfg.n_classes):
        raise ValueError(f"the predicted labels hold values {sorted(set(labels.tolist()))}, which do not match a "
                         f"head for {cfg.n_classes} classes (0..{cfg.n_classes - 1})")
    tcfg = train_cfg or anchor_train_config(n_steps)
    if tcfg.batch_size * cfg.activation_rate < 1:
        raise ValueError(f"batch_size={tcfg.batch_size} is too small for the activation-rate loss with "
                         f"tau={cfg.activation_rate}: floor(B * tau) must be at least 1")
    generator = torch.Generator().manual_seed(tcfg.seed)
    head = nn.Linear(cfg.n_concepts, cfg.n_classes)
    with torch.no_grad():  # seeded head initialisation (nn.Linear's own uses the global RNG)
        bound = 1 / cfg.n_concepts ** 0.5
        head.weight.uniform_(-bound, bound, generator=generator)
        head.bias.uniform_(-bound, bound, generator=generator)
    loss = ClassifSAELoss(cfg, head, tcfg.total_steps)
    sae_cfg = cfg.sae_config(vectors.shape[1], hook_name=hook_name, model_name=model_name, dataset=dict(dataset or {}))
    options = {"extra_loss": loss, "extra_modules": {"head": head}, "progress": progress}
    if cfg.normalize_activations == "centered":
        sae = train_centered(vectors, sae_cfg, tcfg, side={"label": labels}, **options)
    else:
        sae = train_sae(TensorSource(vectors, side={"label": labels}), sae_cfg, tcfg, **options)
    log = loss.dead_log or [0]
    sae.cfg.metadata["classifsae_dead_latents"] = {"max": max(log), "final": log[-1], "window": cfg.dead_window,
                                                   "ghost_grads": cfg.ghost_grads}
    return ClassifSAE(sae, head, cfg)


__all__ = [
    "SCALINGS", "ClassifSAE", "ClassifSAEConfig", "ClassifSAELoss", "activation_rate_loss", "anchor_train_config",
    "centered_scale", "ghost_grad_loss", "normalized_reconstruction_loss", "paper_train_config", "train_centered",
    "train_classifsae",
]
