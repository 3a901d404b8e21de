"""Which SAEs notebooks 02 and 04-06 use, per model: one catalog, so `make zoo` builds exactly what they load.

Layers are given as fractions of depth (rounded to a block), so the catalog resolves on any model; on Gemma 3 270M
(18 blocks) they are the blocks the notebooks have always used: 5 / 8 / 12 (notebook 04's early / middle / late;
notebook 07 reads with the middle one),
6 (notebooks 02 and 06), and 1, 5, 8, 12, 16 (notebook 05's layer sweep).

    specs = notebook_specs(model, "05")      # {name: SAESpec}
    hooks = catalog_hooks(model)             # every hook of every notebook: extracted in one pass
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saelab.models import model_name
from saelab.zoo_spec import SAESpec

NOTEBOOKS = ("02", "04", "05", "06", "07")
#: notebook 04's early / middle / late residual streams (the paper: about 25 / 45 / 70% deep)
PROBE_DEPTHS = {"early": 0.28, "middle": 0.45, "late": 0.67}
#: notebooks 02 and 06: one hook, 12 SAEs of four architectures at three sparsities
SWEEP_DEPTH = 0.34
#: the second model of notebook 04 (half-way through SmolLM2-135M's 30 blocks)
SECOND_MODEL, SECOND_MODEL_DEPTH = "smollm2-135m", 0.47


def block_at(model, depth: float) -> int:
    """The block `depth` of the way through the model (0 = first block)."""
    return int(round(depth * model.cfg.n_layers))


def resid_post(block: int) -> str:
    return f"blocks.{block}.hook_resid_post"


def architecture_sweep(hook: str) -> dict[str, SAESpec]:
    """TopK and BatchTopK at k 16/32/64, ReLU at three L1 coefficients, JumpReLU at three initial thresholds."""
    specs = {f"topk k={k}": SAESpec(hook, "topk", k=k) for k in (16, 32, 64)}
    specs |= {f"batchtopk k={k}": SAESpec(hook, "batchtopk", k=k, options={"topk_threshold_lr": 0.1})
              for k in (16, 32, 64)}
    specs |= {f"relu l1={c:g}": SAESpec(hook, "relu", options={"l1_coefficient": c}) for c in (0.15, 0.3, 0.5)}
    specs |= {f"jumprelu threshold={t:g}": SAESpec(hook, "jumprelu", options={"jumprelu_init_threshold": t})
              for t in (0.25, 0.5, 1.0)}
    return specs


def polysemy_specs(model) -> dict[str, SAESpec]:
    """Notebook 05: a layer sweep, three components, three activation functions, four widths, three sparsities."""
    layers = sorted({int(round(x)) for x in np.linspace(1, model.cfg.n_layers - 2, 5)})  # shallow models repeat
    mid = layers[len(layers) // 2]
    resid = resid_post(mid)
    specs = {f"layer {layer}": SAESpec(resid_post(layer)) for layer in layers}
    specs |= {"attention out": SAESpec(f"blocks.{mid}.hook_attn_out"), "MLP out": SAESpec(f"blocks.{mid}.hook_mlp_out"),
              "relu": SAESpec(resid, "relu", options={"l1_coefficient": 0.3}),
              "jumprelu": SAESpec(resid, "jumprelu", options={"jumprelu_init_threshold": 0.5, "l0_coefficient": 1.0})}
    specs |= {f"width {w}": SAESpec(resid, d_sae=w) for w in (1280, 2560, 10240)}
    specs |= {f"k={k}": SAESpec(resid, k=k) for k in (16, 64)}
    return specs


def probe_specs(model) -> dict[str, SAESpec]:
    """Notebook 04: three depths, a wider SAE and a resid_pre SAE at the middle one."""
    blocks = {name: block_at(model, depth) for name, depth in PROBE_DEPTHS.items()}
    mid = blocks["middle"]
    specs = {f"{name} post 4096": SAESpec(resid_post(block)) for name, block in blocks.items()}
    specs |= {"middle post 10240": SAESpec(resid_post(mid), d_sae=10240),
              "middle pre 4096": SAESpec(f"blocks.{mid}.hook_resid_pre")}
    return specs


def notebook_specs(model, notebook: str) -> dict[str, SAESpec]:
    """The SAEs notebook `notebook` ("02", "04", "05", "06" or "07") loads from the zoo, by name."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook={notebook!r}: the zoo serves notebooks {NOTEBOOKS}")
    if model_name(model) == SECOND_MODEL:
        second = {"smollm2": SAESpec(resid_post(block_at(model, SECOND_MODEL_DEPTH)))}
        return second if notebook in ("04", "07") else {}
    if notebook == "04":
        return probe_specs(model)
    if notebook == "07":  # the model's reading of a word: notebook 04's middle-layer SAE
        return {"reading": probe_specs(model)["middle post 4096"]}
    if notebook == "05":
        return polysemy_specs(model)
    return architecture_sweep(resid_post(block_at(model, SWEEP_DEPTH)))


def all_specs(model, notebooks: Sequence[str] = NOTEBOOKS) -> dict[SAESpec, list[str]]:
    """Every distinct SAE of the catalog for `model` (or only those `notebooks` use, in their order), with the
    notebooks that use it."""
    used: dict[SAESpec, list[str]] = {}
    for notebook in notebooks:
        for spec in notebook_specs(model, notebook).values():
            used.setdefault(spec, []).append(notebook)
    return used


def catalog_hooks(model) -> list[str]:
    """Every hook the catalog's SAEs read on `model`: the shared corpus is extracted at all of them in one pass."""
    return sorted({spec.hook for spec in all_specs(model)})


__all__ = ["NOTEBOOKS", "all_specs", "architecture_sweep", "block_at", "catalog_hooks", "notebook_specs",
           "polysemy_specs", "probe_specs"]
