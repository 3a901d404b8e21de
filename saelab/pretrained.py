"""Pretrained SAEs from SAELens' release registry, as saelab SAEs: what the papers used, in one call.

    sae = saelab.load_pretrained_sae("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical")
    sae = saelab.load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre", model=model)  # checks the fit

SAELens resolves the release to a Hugging Face repository and folder and converts the files (Gemma Scope's
`params.npz`, SAELens' own `cfg.json` + `sae_weights.safetensors`, ...); its downloads stay in the Hugging Face
cache (`HF_HOME`), so the second call reads the disk. saelab then takes SAELens' config and tensors through the
same checks as `SAE.load` (names, shapes, architecture, decoder-norm folding), so the result encodes and decodes
exactly as `sae_lens.SAE.from_pretrained` does (tested), and every saelab tool (metrics, dashboards, steering,
probing) takes it. Offline, an SAE that is not cached fails at once with `PretrainedSAENotAvailableError`, which
says what to do, as `load_model` does for models.

`score_saes(model, saes)` measures pretrained SAEs on the zoo's held-out texts and records the numbers where zoo
SAEs keep theirs, so `zoo.gate` and `zoo.gate_claims` judge them by the same quality gates.

Notebooks name their SAEs as specs: a `zoo.SAESpec` (trained here) or a `PretrainedSpec` (a registry SAE, with the
hook, architecture and width it must have), mixed freely; `get_saes(model, specs)` gets each from where it lives,
and `table(model, specs, saes)` lists their held-out numbers and gates, so a notebook's `PRESET = "paper"` only
changes its parameter cell.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from saelab.checks import check_hooks
from saelab.config import smoke_mode
from saelab.hub import hub_offline, hub_reachable
from saelab.models import ModelNotAvailableError, model_name
from saelab.sae import ARCHITECTURES, SAE, SAEConfig
from saelab.sae_files import cfg_from_saelens, check_weights, fold_decoder_norms
from saelab.zoo import Heldout, SAESpec, gate
from saelab.zoo import get_saes as zoo_get_saes
from saelab.zoo import table as zoo_table


class PretrainedSAENotAvailableError(ModelNotAvailableError):
    """A registry SAE that is neither in the local Hugging Face cache nor downloadable (offline)."""


def registry() -> dict[str, Any]:
    """SAELens' release registry: {release: lookup with repo_id, model, saes_map (sae_id -> folder), ...}."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def releases(model: str | None = None) -> list[str]:
    """Release names in SAELens' registry, optionally only those for `model` (SAELens' name, e.g. "gemma-2-2b")."""
    return sorted(r for r, lookup in registry().items() if model is None or lookup.model == model)


def _lookup(release: str, sae_id: str):
    for name, value in (("release", release), ("sae_id", sae_id)):
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"{name} must be a non-empty string such as 'gemma-scope-2b-pt-res-canonical' / "
                            f"'layer_12/width_16k/canonical', not {value!r}")
    known = registry()
    if release not in known:
        close = difflib.get_close_matches(release, list(known), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"{release!r} is not a release in SAELens' registry.{hint} saelab.pretrained.releases() "
                         "lists them (see https://decoderesearch.github.io/SAELens/latest/pretrained_saes/).")
    lookup = known[release]
    if sae_id not in lookup.saes_map:
        close = difflib.get_close_matches(sae_id, list(lookup.saes_map), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"{sae_id!r} is not an SAE of release {release!r} ({len(lookup.saes_map)} SAEs, e.g. "
                         f"{next(iter(lookup.saes_map))!r}){hint}")
    return lookup


def _not_cached(release: str, sae_id: str, lookup) -> PretrainedSAENotAvailableError:
    folder = lookup.saes_map[sae_id]
    return PretrainedSAENotAvailableError(
        f"The SAE {release}/{sae_id} ({lookup.repo_id}, folder {folder}) is not in the local Hugging Face cache and "
        f"the hub cannot be reached (offline). On a machine with network, run "
        f"saelab.load_pretrained_sae({release!r}, {sae_id!r}) once (or `hf download {lookup.repo_id} --include "
        f"'{folder}/*'`) and copy the Hugging Face cache (HF_HOME, default ~/.cache/huggingface) here; or use the "
        "SAEs trained here (SAES = \"zoo\").")


def _from_saelens(release: str, sae_id: str, device: str):
    """SAELens' own loading (registry, download or cache, conversion): (its SAE, its cfg dict)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from sae_lens import SAE as SAELensSAE

    lookup = _lookup(release, sae_id)
    offline = not hub_reachable()
    try:
        with hub_offline(offline), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SAELens announces deprecations and folded normalisations
            theirs, cfg_dict, _ = SAELensSAE.from_pretrained_with_cfg_and_sparsity(release, sae_id, device=device)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise _not_cached(release, sae_id, lookup) from err
    return theirs, cfg_dict, lookup


def load_pretrained_sae(release: str, sae_id: str, *, model=None, device: str | torch.device = "cpu",
                        dtype: str = "float32") -> SAE:
    """A pretrained SAE from SAELens' registry as a saelab `SAE` (same encode / decode as SAELens' own).

    Args:
        release, sae_id: as in `sae_lens.SAE.from_pretrained`, e.g. ``"gpt2-small-res-jb"``,
            ``"blocks.8.hook_resid_pre"``; `saelab.pretrained.releases()` lists the releases.
        model: the model it will read (optional): checked to have the SAE's hook and width, with a clear error.
        device, dtype: where the SAE lives (``"float32"``, ``"bfloat16"`` or ``"float16"``).

    Raises:
        PretrainedSAENotAvailableError: offline, and the files are not in the Hugging Face cache.
        ValueError: an unknown release or sae_id (with the closest names), or an architecture saelab cannot run.
    """
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype={dtype!r}: choose 'float32', 'bfloat16' or 'float16'")
    theirs, _, lookup = _from_saelens(release, sae_id, "cpu")
    raw = theirs.cfg.to_dict()
    if raw.get("normalize_activations") == "layer_norm":
        raise ValueError(f"{release}/{sae_id} normalises each input with a layer norm (SAELens' normalize_activations="
                         "'layer_norm', as OpenAI's GPT-2 v5 SAEs do), which depends on the input and cannot be folded "
                         "into the weights; saelab's SAE has no such step yet: use sae_lens.SAE for this release.")
    where = Path(f"{release}/{sae_id}")
    raw["metadata"] = dict(raw.get("metadata") or {})
    cfg, fold = cfg_from_saelens(raw, where, SAEConfig, set(ARCHITECTURES) | {"standard"})
    state = {key: value.detach().float() for key, value in theirs.state_dict().items()}
    tensors = check_weights(state, cfg, where)
    if fold:
        tensors = fold_decoder_norms(tensors)
    cfg.dtype, cfg.device = dtype, "cpu"
    cfg.metadata["pretrained"] = {
        "release": release, "sae_id": sae_id, "repo_id": lookup.repo_id, "folder": lookup.saes_map[sae_id],
        "registry_model": lookup.model, "neuronpedia_id": lookup.neuronpedia_id.get(sae_id),
        "expected_l0": lookup.expected_l0.get(sae_id),
        "expected_var_explained": lookup.expected_var_explained.get(sae_id),
    }
    sae = SAE(cfg)
    sae.load_state_dict({key: value.to(sae.W_enc.dtype) for key, value in tensors.items()}, strict=True)
    sae = sae.to(device).eval()
    cfg.device = str(sae.device)
    if model is not None:
        check_fits(model, sae)
    return sae


def check_fits(model, sae: SAE) -> None:
    """Raise, naming both, when `sae` cannot read `model`: its hook is missing or its width is not the model's."""
    hook = sae.cfg.hook_name
    if hook is None:
        raise ValueError(f"{sae} records no hook_name: pass hook= where it is used")
    check_hooks(model, [hook])
    source = sae.cfg.metadata.get("pretrained", {})
    trained_on = source.get("registry_model") or sae.cfg.model_name or "another model"
    d_model = int(model.cfg.d_model)
    if hook.endswith(("resid_pre", "resid_post", "resid_mid", "attn_out", "mlp_out")) and sae.cfg.d_in != d_model:
        raise ValueError(f"The SAE {source.get('release', '')}/{source.get('sae_id', hook)} was trained on "
                         f"{trained_on} (width {sae.cfg.d_in}) but {model_name(model)} has d_model={d_model}: load "
                         f"the model it was trained on (e.g. a preset's MODEL) or an SAE for {model_name(model)}.")


def load_pretrained_saes(refs: Mapping[Any, tuple[str, str]], *, model=None, device: str | torch.device = "cpu",
                         score: bool = False, progress: bool = True) -> dict[Any, SAE]:
    """{name: SAE} for {name: (release, sae_id)}: what a notebook's `SAES` parameter names instead of "zoo".

    score: also measure each on held-out texts (`score_saes`, needs `model`), so quality gates apply to them.
    """
    saes = {name: load_pretrained_sae(*ref, model=model, device=device) for name, ref in refs.items()}
    if score:
        if model is None:
            raise ValueError("score=True needs the model the SAEs read: pass model=")
        score_saes(model, saes, progress=progress)
    return saes


def score_saes(model, saes: Mapping[Any, SAE], *, smoke: bool | None = None, progress: bool = True) -> dict[Any, dict]:
    """Score SAEs as the zoo scores its own (held-out explained variance, L0, share alive, CE loss score) and record
    it in `sae.cfg.metadata["zoo_quality"]`, so `zoo.gate` and `zoo.gate_claims` judge them by the same gates."""
    smoke = smoke_mode() if smoke is None else smoke
    hooks = sorted({sae.cfg.hook_name for sae in saes.values()})
    heldout = Heldout(model, hooks, smoke, progress)
    out = {}
    for name, sae in saes.items():
        sae.cfg.metadata["zoo_quality"] = out[name] = heldout.quality(model, sae)
    return out


def quality_rows(saes: Mapping[Any, SAE]) -> list[dict[str, Any]]:
    """One row per SAE (its source, hook, width, held-out numbers if scored, gate): for a notebook's table."""
    rows = []
    for name, sae in saes.items():
        source = sae.cfg.metadata.get("pretrained", {})
        quality = sae.cfg.metadata.get("zoo_quality") or {}
        row = {"name": name if isinstance(name, str) else str(name),
               "source": f"{source['release']}/{source['sae_id']}" if source else "zoo",
               "architecture": sae.architecture, "d_sae": sae.cfg.d_sae, "hook": sae.cfg.hook_name}
        row |= {key: round(float(quality[key]), 3) for key in ("explained_variance", "ce_loss_score", "l0",
                                                             "frac_alive") if key in quality}
        passes, why = gate(sae)
        rows.append(row | {"gate": "pass" if passes else why})
    return rows


# ------------------------------------------------------------------------------------------------------------------
# Specs: zoo SAEs and registry SAEs side by side
# ------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainedSpec:
    """A registry SAE as a notebook names it: where it comes from, and the hook, architecture and width it must
    have (checked when it loads), so that a notebook can lay out its sweeps before loading anything."""

    release: str
    sae_id: str
    hook: str
    architecture: str
    d_sae: int
    k: int | None = None

    @property
    def label(self) -> str:
        sparsity = f"k={self.k} " if self.k is not None else ""
        return f"{self.architecture} {sparsity}d_sae={self.d_sae} @ {self.hook} ({self.release})"


def _load_spec(model, spec: PretrainedSpec, device) -> SAE:
    sae = load_pretrained_sae(spec.release, spec.sae_id, model=model, device=device)
    found = {"hook": sae.cfg.hook_name, "architecture": sae.architecture, "d_sae": sae.cfg.d_sae}
    wrong = {key: value for key, value in found.items() if getattr(spec, key) != value}
    if wrong:
        raise ValueError(f"{spec.release}/{spec.sae_id} has {wrong}, not what its PretrainedSpec declares "
                         f"({ {key: getattr(spec, key) for key in wrong} }): fix the spec")
    return sae


def get_saes(model, specs: Sequence | Mapping[Any, Any], *, score: bool = True,
             device: str | torch.device | None = None, progress: bool = True) -> dict[Any, SAE]:
    """Each SAE of `specs` (zoo `SAESpec`s and `PretrainedSpec`s, mixed; a list or a {name: spec} dict), from the
    zoo (trained once) or SAELens' registry; keys as `zoo.get_saes` gives them. score: measure registry SAEs on
    held-out texts (`score_saes`), so the zoo's quality gates apply to them too."""
    named = dict(specs) if isinstance(specs, Mapping) else {spec: spec for spec in specs}
    wrong = [spec for spec in named.values() if not isinstance(spec, (SAESpec, PretrainedSpec))]
    if wrong:
        raise TypeError(f"specs must be saelab.SAESpec or saelab.pretrained.PretrainedSpec objects, not {wrong[0]!r}")
    zoo_specs = list(dict.fromkeys(spec for spec in named.values() if isinstance(spec, SAESpec)))
    found: dict[Any, SAE] = zoo_get_saes(model, zoo_specs, progress=progress) if zoo_specs else {}
    device = device or "cpu"  # where zoo SAEs load too; saelab moves activations to the SAE
    loaded = {spec: _load_spec(model, spec, device) for spec in dict.fromkeys(named.values())
              if isinstance(spec, PretrainedSpec)}
    if loaded and score:
        score_saes(model, loaded, progress=progress)
    found |= loaded
    return {name: found[spec] for name, spec in named.items()}


def table(model, specs: Sequence | Mapping[Any, Any], saes: Mapping[Any, SAE] | None = None) -> pd.DataFrame:
    """`zoo.table` for specs that may include `PretrainedSpec`s (whose rows come from the loaded `saes`, keyed by
    name or by spec)."""
    named = dict(specs) if isinstance(specs, Mapping) else {spec: spec for spec in specs}
    labels = {name: spec.label if isinstance(name, (SAESpec, PretrainedSpec)) else str(name)
              for name, spec in named.items()}
    zoo_specs = {labels[name]: spec for name, spec in named.items() if isinstance(spec, SAESpec)}
    zoo_rows = zoo_table(model, zoo_specs) if zoo_specs else None  # one call: the corpus is read once
    # `saes` may be keyed like `specs` (by name) or by spec, as `get_saes` returns them for a list
    by_spec = {named.get(key, key): sae for key, sae in (saes or {}).items()}
    rows = []
    for name, spec in named.items():
        label = labels[name]
        if isinstance(spec, SAESpec):
            rows.append({"name": label, **zoo_rows.loc[label].to_dict()})
            continue
        row = {"name": label, "architecture": spec.architecture, "d_sae": spec.d_sae, "hook": spec.hook}
        if spec in by_spec:
            quality = quality_rows({label: by_spec[spec]})[0]
            row |= {"train tokens": "pretrained"} | {k: v for k, v in quality.items() if k not in row}
        else:
            row["gate"] = "not loaded"
        rows.append(row)
    return pd.DataFrame(rows).set_index("name")


__all__ = [
    "PretrainedSAENotAvailableError",
    "PretrainedSpec",
    "check_fits",
    "get_saes",
    "load_pretrained_sae",
    "load_pretrained_saes",
    "quality_rows",
    "registry",
    "releases",
    "score_saes",
    "table",
]
