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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from saelab._version import __version__
from saelab.io import atomic_dir, read_json, save_tensors, write_json

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
EXTRA_WEIGHTS_FILENAME = "extra_weights.safetensors"  # heads and other modules trained beside the SAE

# SAELens reads `metadata.sae_lens_version` to choose its cfg.json parser; "6.0.0" marks the v6 layout we write.
# Which program wrote the file is recorded separately, under `metadata.saelab_version`.
SAELENS_FORMAT_VERSION = "6.0.0"

NORMALIZATIONS = ("none", "expected_average_only_in")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

ARCHITECTURES: dict[str, type[SAE]] = {}
_ALIASES = {"standard": "relu"}  # SAELens' name for the plain ReLU + L1 SAE


def register_architecture(name: str):
    """Class decorator: make `SAE(SAEConfig(architecture=name, ...))` build this class."""

    def wrap(cls: type[SAE]) -> type[SAE]:
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(f"SAEConfig.from_dict ignores unknown keys {unknown}", stacklevel=2)
        return cls(**{key: value for key, value in d.items() if key in names})


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
        folder = Path(folder)
        saelens_name, tensors, extra_cfg = self.inference_state()
        with atomic_dir(folder) as tmp:
            save_tensors(tensors, tmp / WEIGHTS_FILENAME, metadata={"saelab_version": __version__})
            if extra_modules:
                extra = {
                    f"{name}.{key}": value for name, module in extra_modules.items()
                    for key, value in module.state_dict().items()
                }
                save_tensors(extra, tmp / EXTRA_WEIGHTS_FILENAME, metadata={"saelab_version": __version__})
            write_json(tmp / CFG_FILENAME, self._saelens_cfg(saelens_name, extra_cfg))
        return folder

    def _saelens_cfg(self, saelens_name: str, extra_cfg: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        dataset = dict(cfg.dataset)
        saelab_cfg = cfg.to_dict()
        saelab_cfg.pop("metadata")
        metadata = {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": None,
            "hook_head_index": None,
            "context_size": dataset.get("context_size"),
            "prepend_bos": dataset.get("prepend_bos", True),
            "dataset_path": dataset.get("path") or dataset.get("name"),
            "training_architecture": self.architecture,
            **cfg.metadata,  # the training recipe and anything else recorded on the way
            # what this file is, whoever wrote the SAE first
            "saelab_version": __version__,
            "model_name": cfg.model_name,
            "hook_name": cfg.hook_name,
            "dataset": dataset,
            "saelab_config": saelab_cfg,
        }
        return {
            "architecture": saelens_name,
            "d_in": cfg.d_in,
            "d_sae": cfg.d_sae,
            "dtype": cfg.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "normalize_activations": cfg.normalize_activations,
            "reshape_activations": "none",
            **extra_cfg,
            "metadata": metadata,
        }

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: str | None = None) -> SAE:
        """Load an SAE folder written by `SAE.save` or by SAELens (`cfg.json` + `sae_weights.safetensors`).

        Refuses, naming the file or tensor, a folder with a missing file, a missing or unexpected tensor, or a
        tensor whose shape disagrees with cfg.json.
        """
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"SAE.load needs a folder path, not {folder!r}: give the folder that holds {CFG_FILENAME} "
                            f"and {WEIGHTS_FILENAME} (what sae.save(folder) writes).")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"SAE folder {folder} does not exist: check the path (sae.save(folder) writes one)")
        for name in (CFG_FILENAME, WEIGHTS_FILENAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"SAE folder {folder} has no {name}: check the path, or save the SAE there "
                                        "again (sae.save(folder))")
        try:
            raw = read_json(folder / CFG_FILENAME)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{folder / CFG_FILENAME} is not valid JSON ({err}): fix or delete it, and save the "
                             "SAE again") from None
        cfg, fold_decoder_norm = _cfg_from_saelens(raw, folder)
        if dtype is not None:
            cfg.dtype = dtype
        cfg.device = "cpu"
        try:
            with safe_open(folder / WEIGHTS_FILENAME, framework="pt", device="cpu") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except SafetensorError as error:
            raise ValueError(f"{folder / WEIGHTS_FILENAME} is not a readable safetensors file ({error}); "
                             "it is probably truncated: delete the folder and save or train the SAE again") from error
        tensors = _check_weights(tensors, cfg, folder / WEIGHTS_FILENAME)
        if fold_decoder_norm:
            # SAELens' `rescale_acts_by_decoder_norm`: pre-acts were multiplied by the decoder row norms and
            # latents divided by them before decoding. Folding the norms into the weights gives the same maps.
            norm = tensors["W_dec"].norm(dim=1).clamp_min(1e-8)
            tensors["W_enc"] = tensors["W_enc"] * norm
            tensors["b_enc"] = tensors["b_enc"] * norm
            tensors["W_dec"] = tensors["W_dec"] / norm[:, None]
        sae = SAE(cfg)
        sae.load_state_dict({key: value.to(DTYPES[cfg.dtype]) for key, value in tensors.items()}, strict=True)
        sae = sae.to(device).eval()
        cfg.device = str(sae.device)
        return sae

    def __repr__(self) -> str:
        k = f", k={self.cfg.k}" if self.architecture in ("topk", "batchtopk") else ""
        return f"{type(self).__name__}(d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}{k}, hook={self.cfg.hook_name!r})"


def load_extra_weights(folder: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The extra modules' state dicts saved beside an SAE, by module name ({} if there are none)."""
    path = Path(folder) / EXTRA_WEIGHTS_FILENAME
    if not path.is_file():
        return {}
    out: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(path, framework="pt", device="cpu") as handle:
        for key in handle.keys():  # noqa: SIM118
            module, _, param = key.partition(".")
            out.setdefault(module, {})[param] = handle.get_tensor(key)
    return out


def _cfg_from_saelens(raw: dict[str, Any], folder: Path) -> tuple[SAEConfig, bool]:
    """An SAEConfig from a cfg.json dict (ours or SAELens'); also whether decoder norms must be folded in."""
    where = f"{folder / CFG_FILENAME}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} holds a JSON {type(raw).__name__}, not an object of SAE settings: fix or delete it, "
                         "and save the SAE again")
    metadata = dict(raw.get("metadata") or {})
    for key in ("architecture", "d_in", "d_sae"):
        if key not in raw:
            raise ValueError(f"{where} has no {key!r}: save the SAE again, or add it (SAELens' cfg.json names "
                             "architecture, d_in and d_sae)")
    for key in ("d_in", "d_sae"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise ValueError(f"{where}: {key}={value!r} must be a positive integer")
    architecture = raw["architecture"]
    if _ALIASES.get(architecture, architecture) not in ARCHITECTURES:
        raise ValueError(f"{where}: architecture {architecture!r} is not supported; saelab reads "
                         f"{sorted(set(ARCHITECTURES) | set(_ALIASES))}")
    if raw.get("reshape_activations", "none") != "none":
        raise ValueError(f"{where}: reshape_activations={raw['reshape_activations']!r} (hook_z SAEs) is not supported")
    normalize = raw.get("normalize_activations", "none") or "none"
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{where}: normalize_activations={normalize!r} is not supported; fold it into the weights "
                         f"first (saelab reads {NORMALIZATIONS})")
    known = dict(metadata.pop("saelab_config", None) or {})  # our own fields, when we wrote the file
    dataset = metadata.pop("dataset", None) or known.get("dataset") or {}
    if not dataset and metadata.get("dataset_path"):
        dataset = {"path": metadata["dataset_path"]}
    for key in ("model_name", "hook_name"):  # SAELens < 6 kept these at the top level
        if metadata.get(key) is None and raw.get(key) is not None:
            metadata[key] = raw[key]
    fields = {f.name for f in dataclasses.fields(SAEConfig)}
    values = {key: value for key, value in known.items() if key in fields}
    values.update(
        architecture=architecture,
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        dtype=str(raw.get("dtype", "float32")).replace("torch.", ""),
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        normalize_activations=normalize,
        hook_name=metadata.get("hook_name"),
        model_name=metadata.get("model_name"),
        dataset=dataset,
        metadata={key: value for key, value in metadata.items() if key not in ("hook_name", "model_name")},
    )
    if architecture == "topk":
        values["k"] = int(raw["k"]) if raw.get("k") is not None else values.get("k")
    try:
        cfg = SAEConfig(**values)
    except (TypeError, ValueError) as err:  # a field that SAEConfig rejects: say which file it came from
        raise ValueError(f"{where}: {err}") from None
    fold = architecture == "topk" and bool(raw.get("rescale_acts_by_decoder_norm", False))
    return cfg, fold


def _check_weights(tensors: dict[str, torch.Tensor], cfg: SAEConfig, path: Path) -> dict[str, torch.Tensor]:
    """Check names and shapes against cfg.json; convert SAELens' older names. Raises naming the culprit."""
    tensors = dict(tensors)
    if "log_threshold" in tensors and "threshold" not in tensors:  # SAELens < 6.x JumpReLU checkpoints
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    if "scaling_factor" in tensors:  # an old SAELens field, all ones when unused
        if not torch.allclose(tensors["scaling_factor"], torch.ones_like(tensors["scaling_factor"])):
            raise ValueError(f"{path}: a non-trivial 'scaling_factor' (finetuning scale) is not supported")
        del tensors["scaling_factor"]
    d_in, d_sae = cfg.d_in, cfg.d_sae
    expected = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    if cfg.architecture == "jumprelu":
        expected["threshold"] = (d_sae,)
    if cfg.architecture == "batchtopk":
        expected["topk_threshold"] = ()
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(f"{path} has no tensor {name!r} (a {cfg.architecture} SAE needs {sorted(expected)}): "
                             "save the SAE again")
        if tuple(tensors[name].shape) != shape:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)} but cfg.json "
                f"(d_in={d_in}, d_sae={d_sae}) expects {shape}: the two files do not belong together; save the "
                "SAE again"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(f"{path} has unexpected tensors {unexpected} for a {cfg.architecture} SAE")
    return tensors


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


class _JumpReLUFn(torch.autograd.Function):
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


class _StepFn(torch.autograd.Function):
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
        return _JumpReLUFn.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, out: SAEOutput, scale: float = 1.0) -> dict[str, torch.Tensor]:
        l0 = _StepFn.apply(out.pre_acts, self.threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return {"l0": scale * self.cfg.l0_coefficient * l0}

    def inference_state(self) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
        name, tensors, extra = super().inference_state()
        tensors["threshold"] = self.threshold.detach()
        return name, tensors, extra


__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "ReLUSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE",
    "register_architecture", "load_extra_weights", "CFG_FILENAME", "WEIGHTS_FILENAME", "EXTRA_WEIGHTS_FILENAME",
]
