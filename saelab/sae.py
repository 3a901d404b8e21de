"""Sparse autoencoders with SAELens' parameter names, maths and files.

An SAE maps a model activation x (d_in numbers) to d_sae latents z and back:

    pre   = (x - b_dec) @ W_enc + b_enc          # W_enc [d_in, d_sae]
    z     = activation(pre)                       # relu / topk / batchtopk / jumprelu
    x_hat = z @ W_dec + b_dec                     # W_dec [d_sae, d_in], one unit-norm row per latent

The four architectures differ only in `activation` (and in the sparsity penalty used in training):

    relu      z = relu(pre)                                   + L1 penalty   (SAELens "standard")
    topk      keep the k largest pre per token, relu them                   (Gao et al. 2024)
    batchtopk keep the k*B largest relu(pre) over a batch of B tokens        (Bussmann et al. 2024);
              at inference a single learned threshold replaces the batch, z = relu(pre) * (pre > t)
    jumprelu  z = pre * (pre > threshold_j), one threshold per latent       (Rajamanoharan et al. 2024)
              + L0 penalty, trained with a straight-through estimator

`sae.save(folder)` writes `cfg.json` + `sae_weights.safetensors` in SAELens' layout, so that
`sae_lens.SAE.load_from_disk(folder)` gives the same encode/decode; `SAE.load(folder)` reads those folders
(ours or SAELens') back. A BatchTopK SAE is saved, as SAELens does, in its inference form: a JumpReLU SAE
whose thresholds all equal the learned batch threshold.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from saelab.config import config_from_dict
from saelab.sae_files import (
    NORMALIZATIONS,
    WEIGHTS_FILENAME,
    cfg_from_saelens,
    check_weights,
    fold_decoder_norms,
    read_cfg_json,
    read_weights,
    saelens_cfg,
    write_sae_folder,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

ARCHITECTURES: dict[str, type[SAE]] = {}
_ALIASES = {"standard": "relu"}  # SAELens' name for the plain ReLU + L1 SAE


def register_architecture(name: str):
    """Class decorator: make `SAE(SAEConfig(architecture=name, ...))` build this class."""

    def wrap(cls: type[SAE]) -> type[SAE]:
        if name in ARCHITECTURES or name in _ALIASES:
            raise ValueError(f"an SAE architecture named {name!r} is already registered "
                             f"({ARCHITECTURES.get(name, name)!r}): choose another name")
        cls.architecture = name
        ARCHITECTURES[name] = cls
        return cls

    return wrap


def canonical_architecture(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown SAE architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return name


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class SAEConfig:
    """What an SAE is: its shape, architecture and where its activations come from.

    `dataset` holds what identifies the training data (name, fingerprint, number of tokens, ...); `metadata` is
    free-form and gets the training recipe when `train_sae` returns.
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int | None = None  # topk / batchtopk: active latents per token (on average over a batch for batchtopk)
    l1_coefficient: float = 1.0  # relu
    jumprelu_init_threshold: float = 0.01  # jumprelu (SAELens defaults)
    jumprelu_bandwidth: float = 0.05
    l0_coefficient: float = 1.0
    topk_threshold_lr: float = 0.01  # batchtopk: EMA rate of the inference threshold
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"  # or "expected_average_only_in": scale inputs to norm sqrt(d_in)
    hook_name: str | None = None
    model_name: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    device: str = "cpu"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.architecture = canonical_architecture(self.architecture)
        if int(self.d_in) <= 0 or int(self.d_sae) <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture in ("topk", "batchtopk"):
            if self.k is None:
                raise ValueError(f"{self.architecture} SAEs need k (active latents per token), e.g. k=32")
            if not 1 <= self.k <= self.d_sae:
                raise ValueError(f"k must be between 1 and d_sae={self.d_sae}, got k={self.k}")
        if self.normalize_activations not in NORMALIZATIONS:
            raise ValueError(
                f"normalize_activations must be one of {NORMALIZATIONS}, got {self.normalize_activations!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.architecture == "jumprelu" and self.jumprelu_bandwidth <= 0:
            raise ValueError("jumprelu_bandwidth must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        return config_from_dict(cls, d)


class SAEOutput(NamedTuple):
    """What a forward pass gives the trainer and extra-loss hooks."""

    x_hat: torch.Tensor  # reconstruction [..., d_in]
    latents: torch.Tensor  # z [..., d_sae]
    pre_acts: torch.Tensor  # encoder output before the activation [..., d_sae]


# ------------------------------------------------------------------------------------------------------------------
# The SAE
# ------------------------------------------------------------------------------------------------------------------


class SAE(nn.Module):
    """A sparse autoencoder. `SAE(cfg)` builds the subclass registered for `cfg.architecture`."""

    architecture: ClassVar[str] = ""

    def __new__(cls, cfg: SAEConfig | None = None, *args: Any, **kwargs: Any):
        if cls is SAE and cfg is not None:
            cls = ARCHITECTURES[canonical_architecture(cfg.architecture)]
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, seed: int | None = None):
        super().__init__()
        if cfg.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} needs architecture {self.architecture!r}, got {cfg.architecture!r}")
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        # Decoder rows: random unit vectors. Encoder: the decoder's transpose, which starts every latent as a
        # matched filter for its own direction (Conerly et al. 2024; Gao et al. 2024).
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_dec.T.clone().to(dtype))
        self.W_dec = nn.Parameter(W_dec.to(dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.training_log: list[dict[str, Any]] = []
        self.to(cfg.device)

    # ---- the maths --------------------------------------------------------------------------------------------

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations: (x - b_dec) @ W_enc + b_enc."""
        if x.shape[-1:] != (self.cfg.d_in,):  # else torch's own error names neither the SAE nor the fix
            got = x.shape[-1] if x.dim() else "a scalar"
            raise ValueError(f"This SAE reads activations of d_in={self.cfg.d_in} numbers, got {got} (shape "
                             f"{tuple(x.shape)}): use activations of its hook {self.cfg.hook_name!r} from the model it "
                             "was trained on.")
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The architecture's nonlinearity, as used at inference."""
        raise NotImplementedError

    def train_activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The nonlinearity used in training (differs for batchtopk and, in its gradient, jumprelu)."""
        return self.activation(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents z for activations x [..., d_in] -> [..., d_sae]."""
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat = z @ W_dec + b_dec."""
        if z.shape[-1:] != (self.cfg.d_sae,):
            got = z.shape[-1] if z.dim() else "a scalar"
            raise ValueError(f"Latents to decode must have d_sae={self.cfg.d_sae} numbers per row, got {got} (shape "
                             f"{tuple(z.shape)}): decode what this SAE's encode gives.")
        return z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct x (as SAELens' `SAE.forward`)."""
        return self.decode(self.encode(x))

    def forward_train(self, x: torch.Tensor) -> SAEOutput:
        """The training forward pass: reconstruction, latents and pre-activations."""
        pre = self.pre_acts(x)
        z = self.train_activation(pre)
        return SAEOutput(self.decode(z), z, pre)

    def sparsity_loss(self, out: SAEOutput, scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The architecture's sparsity penalty, as named loss terms (none for topk/batchtopk)."""
        return {}

    # ---- helpers ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scale: float) -> None:
        """Make an SAE trained on inputs x * scale work on raw x (SAELens' method of the same name):
        (s x - b) @ W_enc = (x - b / s) @ (s W_enc), and decoding in raw units divides W_dec and b_dec by s."""
        self.W_enc.mul_(scale)
        self.W_dec.div_(scale)
        self.b_dec.div_(scale)
        self.cfg.normalize_activations = "none"

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    def inference_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        """(SAELens architecture name, tensors to save, extra cfg.json keys) of this SAE's inference form."""
        saelens_name = "standard" if self.architecture == "relu" else self.architecture
        tensors = {name: getattr(self, name).detach() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
        return saelens_name, tensors, {}

    # ---- files ------------------------------------------------------------------------------------------------

    def save(self, folder: str | Path, extra_modules: dict[str, nn.Module] | None = None) -> Path:
        """Write `cfg.json` + `sae_weights.safetensors` (SAELens' layout) atomically; return the folder.

        `extra_modules` (e.g. a classifier head) go to `extra_weights.safetensors` as `{name}.{param}`, so that
        SAELens, which loads `sae_weights.safetensors` strictly, still reads the SAE.
        """
        saelens_name, tensors, extra_cfg = self.inference_state()
        return write_sae_folder(folder, tensors, self._saelens_cfg(saelens_name, extra_cfg), extra_modules)

    def _saelens_cfg(self, saelens_name: str, extra_cfg: dict[str, Any]) -> dict[str, Any]:
        return saelens_cfg(self.cfg, self.architecture, saelens_name, extra_cfg)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> SAE:
        """Load an SAE folder written by `SAE.save` or by SAELens (`cfg.json` + `sae_weights.safetensors`).

        Refuses, naming the file or tensor, a folder with a missing file, a missing or unexpected tensor, or a
        tensor whose shape disagrees with cfg.json (the checks live in `saelab.sae_files`).
        """
        # (a folder that is no path at all is refused first, with a TypeError, by read_cfg_json)
        if dtype is not None and dtype not in DTYPES and isinstance(folder, (str, os.PathLike)):
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        folder, raw = read_cfg_json(folder)
        cfg, fold_decoder_norm = cfg_from_saelens(raw, folder, SAEConfig, set(ARCHITECTURES) | set(_ALIASES))
        if dtype is not None:
            cfg.dtype = dtype
        cfg.device = "cpu"
        tensors = check_weights(read_weights(folder), cfg, folder / WEIGHTS_FILENAME)
        if fold_decoder_norm:
            tensors = fold_decoder_norms(tensors)
        sae = SAE(cfg)
        sae.load_state_dict({key: value.to(DTYPES[cfg.dtype]) for key, value in tensors.items()}, strict=True)
        sae = sae.to(device).eval()
        cfg.device = str(sae.device)
        return sae

    def __repr__(self) -> str:
        k = f", k={self.cfg.k}" if self.architecture in ("topk", "batchtopk") else ""
        return f"{type(self).__name__}(d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}{k}, hook={self.cfg.hook_name!r})"


# ------------------------------------------------------------------------------------------------------------------
# Architectures
# ------------------------------------------------------------------------------------------------------------------


@register_architecture("relu")
class ReLUSAE(SAE):
    """The standard SAE: z = relu(pre), trained with an L1 penalty (SAELens "standard")."""

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return F.relu(pre)

    def sparsity_loss(self, out: SAEOutput, scale: float = 1.0) -> dict[str, torch.Tensor]:
        # L1 of the latents weighted by decoder norms, so the penalty cannot be dodged by shrinking z and
        # growing W_dec (the norms are 1 under saelab's trainer; kept for SAEs trained otherwise).
        l1 = (out.latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1": scale * self.cfg.l1_coefficient * l1}


@register_architecture("topk")
class TopKSAE(SAE):
    """TopK: keep each token's k largest pre-activations (then relu), zero the rest."""

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, F.relu(values))

    def inference_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        name, tensors, extra = super().inference_state()
        # saelab keeps decoder rows at unit norm instead of rescaling pre-activations by them
        return name, tensors, {**extra, "k": self.cfg.k, "rescale_acts_by_decoder_norm": False}


@register_architecture("batchtopk")
class BatchTopKSAE(SAE):
    """BatchTopK: in training keep the k*B largest relu(pre) of a batch of B tokens, so k is an average.

    At inference a batch is not a meaningful unit, so one threshold `topk_threshold` (an EMA of the smallest
    activation kept in training batches) stands in: z = relu(pre) * (pre > topk_threshold). This is the form
    that is saved (as a SAELens JumpReLU SAE), as SAELens does.
    """

    def __init__(self, cfg: SAEConfig, seed: int | None = None):
        super().__init__(cfg, seed)
        # float64 as in SAELens: the EMA moves by tiny amounts. Negative means "not yet estimated".
        self.register_buffer("topk_threshold", torch.tensor(-1.0, dtype=torch.float64, device=self.device))

    def train_activation(self, pre: torch.Tensor) -> torch.Tensor:
        acts = F.relu(pre)
        flat = acts.flatten()
        values, indices = flat.topk(self.cfg.k * acts.shape[:-1].numel(), sorted=False)
        return torch.zeros_like(flat).scatter(-1, indices, values).reshape(acts.shape)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        threshold = self.topk_threshold.clamp_min(0).to(pre.dtype)
        return F.relu(pre) * (pre > threshold)

    @torch.no_grad()
    def update_threshold(self, latents: torch.Tensor) -> None:
        """EMA of the smallest positive activation the batch top-k kept (SAELens' rule)."""
        positive = latents[latents > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(torch.float64)
        if self.topk_threshold < 0:
            self.topk_threshold.copy_(smallest)
        else:
            lr = self.cfg.topk_threshold_lr
            self.topk_threshold.mul_(1 - lr).add_(lr * smallest)

    def inference_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        _, tensors, extra = super().inference_state()
        threshold = float(self.topk_threshold.clamp_min(0))
        tensors["threshold"] = torch.full((self.cfg.d_sae,), threshold, dtype=self.W_enc.dtype)
        return "jumprelu", tensors, extra

    def _saelens_cfg(self, saelens_name: str, extra_cfg: dict[str, Any]) -> dict[str, Any]:
        out = super()._saelens_cfg(saelens_name, extra_cfg)
        out["metadata"]["saelab_config"]["architecture"] = "jumprelu"  # what the saved folder is now
        out["metadata"]["training_architecture_details"] = {
            "k": self.cfg.k, "topk_threshold_lr": self.cfg.topk_threshold_lr,
            "topk_threshold": float(self.topk_threshold),
        }
        return out


class JumpReLUFunction(torch.autograd.Function):
    """z = pre * (pre > t). Backward: the usual gradient for pre, and for t a straight-through estimate with a
    rectangle kernel of width `bandwidth` (Rajamanoharan et al. 2024; SAELens' `JumpReLU`)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(pre.dtype)
        grad_threshold = -(threshold / ctx.bandwidth) * near * grad
        return (pre > threshold).to(pre.dtype) * grad, grad_threshold.reshape(-1, pre.shape[-1]).sum(0), None


class StepFunction(torch.autograd.Function):
    """H(pre - t), whose gradient with respect to t is estimated straight-through (used for the L0 penalty)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < ctx.bandwidth / 2).to(pre.dtype)
        grad_threshold = -(1.0 / ctx.bandwidth) * near * grad
        return None, grad_threshold.reshape(-1, pre.shape[-1]).sum(0), None


@register_architecture("jumprelu")
class JumpReLUSAE(SAE):
    """JumpReLU: z = pre * (pre > threshold), one learned threshold per latent, trained with an L0 penalty."""

    def __init__(self, cfg: SAEConfig, seed: int | None = None):
        super().__init__(cfg, seed)
        # `threshold` itself (not its log) is the parameter, as in SAELens 6 and its saved files.
        self.threshold = nn.Parameter(
            torch.full((cfg.d_sae,), cfg.jumprelu_init_threshold, dtype=self.W_enc.dtype, device=self.device)
        )

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return F.relu(pre) * (pre > self.threshold)

    def train_activation(self, pre: torch.Tensor) -> torch.Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, out: SAEOutput, scale: float = 1.0) -> dict[str, torch.Tensor]:
        l0 = StepFunction.apply(out.pre_acts, self.threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return {"l0": scale * self.cfg.l0_coefficient * l0}

    def inference_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        name, tensors, extra = super().inference_state()
        tensors["threshold"] = self.threshold.detach()
        return name, tensors, extra


__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE",
    "JumpReLUFunction", "StepFunction", "register_architecture",
]
