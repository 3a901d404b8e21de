"""The SAE folder format: SAELens' `cfg.json` + `sae_weights.safetensors`, read and written without the SAE class.

`saelab.sae.SAE.save` and `SAE.load` are the entry points; this module holds the file-format seam they share: the
cfg.json an SAE config becomes (`saelens_cfg`), the config a cfg.json (ours or SAELens', old or new) becomes
(`cfg_from_saelens`), and the checks that name the file or tensor when a folder is broken.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
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


def write_sae_folder(folder: str | Path, tensors: dict[str, torch.Tensor], cfg_json: dict[str, Any],
                     extra_modules: dict[str, nn.Module] | None = None) -> Path:
    """Write `cfg.json`, `sae_weights.safetensors` and (given `extra_modules`) `extra_weights.safetensors`
    atomically; return the folder. Extra modules are stored as `{name}.{param}`."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_tensors(tensors, tmp / WEIGHTS_FILENAME, metadata={"saelab_version": __version__})
        if extra_modules:
            extra = {
                f"{name}.{key}": value for name, module in extra_modules.items()
                for key, value in module.state_dict().items()
            }
            save_tensors(extra, tmp / EXTRA_WEIGHTS_FILENAME, metadata={"saelab_version": __version__})
        write_json(tmp / CFG_FILENAME, cfg_json)
    return folder


def saelens_cfg(cfg: Any, architecture: str, saelens_name: str, extra_cfg: dict[str, Any]) -> dict[str, Any]:
    """The cfg.json dict (SAELens v6 layout) of an SAE with config `cfg`, trained as `architecture` and saved as
    SAELens' `saelens_name`; saelab's own config rides along under `metadata.saelab_config`."""
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
        "training_architecture": architecture,
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


def read_cfg_json(folder: Any) -> tuple[Path, Any]:
    """(folder, parsed cfg.json) of an SAE folder; refuses a non-path, a missing folder or file, or invalid JSON."""
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"SAE.load needs a folder path, not {folder!r}: give the folder that holds {CFG_FILENAME} "
                        f"and {WEIGHTS_FILENAME} (what sae.save(folder) writes).")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"SAE folder {folder} does not exist: check the path (sae.save(folder) writes one)")
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"SAE folder {folder} has no {name}: check the path, or save the SAE there "
                                    "again (sae.save(folder))")
    try:
        return folder, read_json(folder / CFG_FILENAME)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{folder / CFG_FILENAME} is not valid JSON ({err}): fix or delete it, and save the "
                         "SAE again") from None


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of `sae_weights.safetensors`, on the CPU; a ValueError when the file is unreadable."""
    try:
        with safe_open(folder / WEIGHTS_FILENAME, framework="pt", device="cpu") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise ValueError(f"{folder / WEIGHTS_FILENAME} is not a readable safetensors file ({error}); "
                         "it is probably truncated: delete the folder and save or train the SAE again") from error


def fold_decoder_norms(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAELens' `rescale_acts_by_decoder_norm`: pre-acts were multiplied by the decoder row norms and latents divided
    by them before decoding. Folding the norms into the weights gives the same maps."""
    tensors = dict(tensors)
    norm = tensors["W_dec"].norm(dim=1).clamp_min(1e-8)
    tensors["W_enc"] = tensors["W_enc"] * norm
    tensors["b_enc"] = tensors["b_enc"] * norm
    tensors["W_dec"] = tensors["W_dec"] / norm[:, None]
    return tensors


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


def cfg_from_saelens(raw: Any, folder: Path, config_cls: type, architectures: Collection[str]) -> tuple[Any, bool]:
    """A `config_cls` (SAEConfig) from a cfg.json dict (ours or SAELens'), given the readable architecture names;
    also whether decoder norms must be folded in."""
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
    if architecture not in architectures:
        raise ValueError(f"{where}: architecture {architecture!r} is not supported; saelab reads "
                         f"{sorted(architectures)}")
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
    fields = {f.name for f in dataclasses.fields(config_cls)}
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
        cfg = config_cls(**values)
    except (TypeError, ValueError) as err:  # a field that SAEConfig rejects: say which file it came from
        raise ValueError(f"{where}: {err}") from None
    fold = architecture == "topk" and bool(raw.get("rescale_acts_by_decoder_norm", False))
    return cfg, fold


def check_weights(tensors: dict[str, torch.Tensor], cfg: Any, path: Path) -> dict[str, torch.Tensor]:
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



__all__ = [
    "CFG_FILENAME", "EXTRA_WEIGHTS_FILENAME", "NORMALIZATIONS", "SAELENS_FORMAT_VERSION", "WEIGHTS_FILENAME",
    "cfg_from_saelens", "check_weights", "fold_decoder_norms", "load_extra_weights", "read_cfg_json", "read_weights",
    "saelens_cfg", "write_sae_folder",
]
