"""Each research notebook's settings in one call: `PRESET = "embedded"` (default) or `"paper"`.

"embedded" runs offline on the embedded Gemma 3 270M (or the model `SAELAB_MODEL` names) with SAEs trained here
once (`make zoo`); "paper" swaps in the paper's own model, layers and pretrained SAELens release (the hub once, and
for the Gemma 2 models a GPU: README, "Any model, any SAE"). The notebooks unpack the fields in their parameter
cell, so a learner sees every setting and can override any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from saelab.config import default_model
from saelab.pretrained import PretrainedSpec, registry
from saelab.zoo_spec import SAESpec

PRESETS = ("embedded", "paper")
GEMMA_SCOPE_2B = "gemma-scope-2b-pt-res-canonical"


@dataclass(frozen=True)
class Preset:
    """One notebook's model and SAEs. `model=None` means the embedded default (or `SAELAB_MODEL`); `saes="zoo"`
    means the notebook's zoo SAEs (`saelab.zoo_catalog`); `hooks` holds layers, hooks or depths as the notebook
    names them (None: the zoo's depths); `extra` holds what only one notebook needs."""

    name: str
    model: str | None = None
    dtype: str | None = None
    saes: Any = "zoo"
    hooks: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _check(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"PRESET={preset!r} is not one of {PRESETS}: 'embedded' runs offline on the embedded model "
                         "with the zoo's SAEs, 'paper' loads the paper's model and pretrained SAEs")


def _gemma_scope(layer: int, width: str = "16k", release: str = GEMMA_SCOPE_2B, d_sae: int = 16384,
                 sae_id: str | None = None) -> PretrainedSpec:
    return PretrainedSpec(release, sae_id or f"layer_{layer}/width_{width}/canonical",
                          f"blocks.{layer}.hook_resid_post", "jumprelu", d_sae)


def mosaic(preset: str = "embedded") -> Preset:
    """Notebook 04 (MOSAIC). Paper: Gemma 2 2B, Gemma Scope 16k residual SAEs at layers 5/12/19 and 65k at 12, and
    Gemma 2 9B's layer 20 as the second model. Keys of `saes`: (depth name, "post"/"pre", width)."""
    _check(preset)
    if preset == "embedded":
        second = "tiny-llama" if default_model().startswith("tiny-") else "smollm2-135m"
        return Preset("embedded", extra={"second_model": second, "second_sae": "zoo", "widths": (4096, 10240)})
    layers = {"early": 5, "middle": 12, "late": 19}  # of Gemma 2 2B's 26 blocks
    saes = {(name, "post", 16384): _gemma_scope(layer) for name, layer in layers.items()}
    saes[("middle", "post", 65536)] = _gemma_scope(12, "65k", d_sae=65536)
    # no Gemma Scope SAE reads resid_pre: block 11's resid_post is the same vector as block 12's resid_pre
    saes[("middle", "pre", 16384)] = _gemma_scope(11)
    second_sae = _gemma_scope(20, release="gemma-scope-9b-pt-res-canonical")  # 20 of Gemma 2 9B's 42 blocks
    return Preset("paper", "google/gemma-2-2b", "bfloat16", saes, layers,
                  {"second_model": "google/gemma-2-9b", "second_sae": second_sae, "widths": (16384, 65536)})


def ps_eval(preset: str = "embedded") -> Preset:
    """Notebook 05 (PS-Eval). Paper: GPT-2 small with Joseph Bloom's residual SAEs (layers 2-11 and the
    feature-splitting widths at block 8); attention/MLP-out and architecture SAEs are trained here on GPT-2 (no
    release saelab can read has them: OpenAI's v5 SAEs normalise their input with a layer norm)."""
    _check(preset)
    if preset == "embedded":
        return Preset("embedded")
    jb = "blocks.8.hook_resid_pre"  # Joseph Bloom's residual SAEs read resid_pre
    saes: dict[str, Any] = {f"layer {layer}": PretrainedSpec("gpt2-small-res-jb", f"blocks.{layer}.hook_resid_pre",
                                                             f"blocks.{layer}.hook_resid_pre", "relu", 24576)
                            for layer in (2, 4, 8, 10, 11)}
    saes |= {f"width {w}": PretrainedSpec("gpt2-small-res-jb-feature-splitting", f"{jb}_{w}", jb, "relu", w)
             for w in (768, 3072, 12288, 49152, 98304)}
    saes |= {"residual": SAESpec(jb), "attention out": SAESpec("blocks.8.hook_attn_out"),
             "MLP out": SAESpec("blocks.8.hook_mlp_out"), "topk": SAESpec(jb),
             "relu": SAESpec(jb, "relu", options={"l1_coefficient": 0.3}),
             "jumprelu": SAESpec(jb, "jumprelu", options={"jumprelu_init_threshold": 0.5, "l0_coefficient": 1.0}),
             "k=16": SAESpec(jb, k=16), "k=64": SAESpec(jb, k=64)}
    return Preset("paper", "gpt2", None, saes, jb)


def steering(preset: str = "embedded") -> Preset:
    """Notebook 06 (Delta Token Confidence). Paper: Gemma 2 2B with every average-L0 variant of Gemma Scope's 16k
    residual SAEs at layers 10, 12 and 20 (the registry lists them). `hooks` is the worked example's hook and
    `extra["example"]` its SAE."""
    _check(preset)
    if preset == "embedded":
        return Preset("embedded", extra={"example": "topk k=32"})
    release = "gemma-scope-2b-pt-res"
    saes = {f"jumprelu layer {layer} L0 {sae_id.rsplit('_', 1)[1]}":
            _gemma_scope(layer, release=release, sae_id=sae_id)
            for layer in (10, 12, 20) for sae_id in registry()[release].saes_map
            if sae_id.startswith(f"layer_{layer}/width_16k/average_l0_")}
    return Preset("paper", "google/gemma-2-2b", "bfloat16", saes, "blocks.12.hook_resid_post",
                  {"example": "jumprelu layer 12 L0 82"})


__all__ = ["PRESETS", "Preset", "mosaic", "ps_eval", "steering"]
