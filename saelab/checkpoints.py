"""Training checkpoints: atomic `step_XXXXXXXXX/` folders holding tensors in safetensors and the rest in JSON.

A checkpoint stores the SAE, any extra modules, the optimizer, the torch / numpy / python RNGs and whatever the
trainer adds (its data cursor, history, ...); a sha256 marks it complete, so a half-written or damaged one is
skipped with a warning, never loaded. No pickles. Used by `saelab.train.train_sae` (`resume=True`).
"""

from __future__ import annotations

import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from saelab._version import __version__
from saelab.io import atomic_dir, read_json, save_tensors, sha256_file, write_json
from saelab.sae import SAE

_CKPT = re.compile(r"^step_(\d{9})$")
STATE_FILE, META_FILE = "state.safetensors", "trainer_state.json"


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"rng.torch": torch.get_rng_state()}, {
        "numpy": [np_state[0], np_state[1].tolist(), *(v.item() if hasattr(v, "item") else v for v in np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, step: int, sae: SAE, extra_modules: dict[str, nn.Module],
                    optimizer: torch.optim.Optimizer, info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write `folder/step_XXXXXXXXX/` atomically: tensors in safetensors, everything else in JSON (no pickles)."""
    tensors = dict(tensors)
    tensors.update({f"sae.{k}": v for k, v in sae.state_dict().items()})
    for name, module in extra_modules.items():
        tensors.update({f"extra.{name}.{k}": v for k, v in module.state_dict().items()})
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{idx}.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    rng_tensors, rng_json = _rng_state()
    tensors.update(rng_tensors)
    target = folder / f"step_{step:09d}"
    with atomic_dir(target) as tmp:
        save_tensors(tensors, tmp / STATE_FILE)
        meta = {**info, "step": step, "param_groups": opt["param_groups"], "rng": rng_json,
                "saelab_version": __version__, "state_sha256": sha256_file(tmp / STATE_FILE), "complete": True}
        write_json(tmp / META_FILE, meta)
    return target


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """A checkpoint's (JSON metadata, tensors) after its checksum is verified; None, with a warning, if it is not
    complete and intact."""
    try:
        meta = read_json(path / META_FILE)
        if not meta.get("complete") or sha256_file(path / STATE_FILE) != meta["state_sha256"]:
            raise ValueError("checksum mismatch or incomplete")
        with safe_open(path / STATE_FILE, framework="pt") as handle:
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        return meta, tensors
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped, loudly
        warnings.warn(f"skipping corrupt or partial checkpoint {path}: {err}", stacklevel=3)
        return None


def find_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint folders under `folder`, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CKPT.match(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def restore_checkpoint(meta: dict[str, Any], tensors: dict[str, torch.Tensor], sae: SAE,
                       extra_modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> None:
    """Load what `save_checkpoint` wrote into the SAE, the extra modules, the optimizer and the RNGs."""
    sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    for name, module in extra_modules.items():
        prefix = f"extra.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    _set_rng_state(tensors, meta["rng"])


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints in `folder`."""
    for old in find_checkpoints(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def check_compatible(meta: dict[str, Any], cfg, tcfg, path: Path) -> None:
    """Refuse a checkpoint written for another SAE shape or batch stream; warn when other training settings changed
    (`cfg`: SAEConfig, `tcfg`: TrainConfig)."""
    saved_cfg, saved_tcfg = meta["sae_config"], meta["train_config"]
    for key in ("architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input", "normalize_activations"):
        if saved_cfg.get(key) != getattr(cfg, key):
            raise ValueError(
                f"checkpoint {path} was written for {key}={saved_cfg.get(key)!r}, not {getattr(cfg, key)!r}")
    for key in ("batch_size", "seed", "window_chunks"):
        if saved_tcfg.get(key) != getattr(tcfg, key):
            raise ValueError(
                f"checkpoint {path} was written with {key}={saved_tcfg.get(key)!r}, not {getattr(tcfg, key)!r}")
    volatile = {"checkpoint_every", "checkpoint_dir", "keep_checkpoints", "log_every", "device"}
    changed = sorted(k for k, v in tcfg.to_dict().items() if k not in volatile and saved_tcfg.get(k) != v)
    if changed:
        warnings.warn(f"resuming with changed training settings {changed}: the result will differ from an "
                      "uninterrupted run", stacklevel=3)


def restore_latest(ckpt_dir: Path, sae: SAE, extra_modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                   cfg, tcfg) -> dict[str, Any] | None:
    """Load the newest valid checkpoint into sae / extra modules / optimizer / RNGs; return the loop's state."""
    for path in find_checkpoints(ckpt_dir):
        loaded = read_checkpoint(path)
        if loaded is None:
            continue
        meta, tensors = loaded
        check_compatible(meta, cfg, tcfg, path)
        restore_checkpoint(meta, tensors, sae, extra_modules, optimizer)
        return {"step": meta["step"], "cursor": meta["cursor"], "history": meta["history"], "scale": meta["scale"],
                "tokens_since_fired": tensors["dead.tokens_since_fired"].to(sae.device),
                "n_revived": meta.get("n_revived", 0)}
    return None


__all__ = ["META_FILE", "STATE_FILE", "check_compatible", "find_checkpoints", "prune_checkpoints", "read_checkpoint",
           "restore_checkpoint", "restore_latest", "save_checkpoint"]
