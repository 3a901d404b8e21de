"""Train-once SAEs for the research notebooks: describe an SAE, get it from the cache or train it, check its quality.

Notebooks 02 and 04-06 sweep layers, components, widths and architectures. Each SAE they need is an `SAESpec`
(`zoo_spec`; the notebooks' own lists are in `zoo_catalog`). `get_saes(model, specs)` loads the ones already in
saelab's cache and trains the rest with `saelab.train_sae` on one shared offline corpus (`training_texts`, about 0.9M
tokens), extracted once at every hook any notebook needs and kept in float16 on disk. Training checkpoints, so a
killed build resumes where it stopped. A cached SAE is reused only when its recorded key (model weights, spec,
corpus, saelab version) matches, so a changed recipe never silently loads a stale SAE.

Every zoo SAE is scored on held-out texts when it is trained (explained variance, CE loss score, L0, share of
latents alive) and checked against its architecture's `QUALITY_GATES`; `table` lists them, and a verdict that rests
on an SAE below its gate is not a finding (`gate`). `build` (`make zoo`) trains every SAE of the catalog.

    saes = zoo.get_saes(model, zoo_catalog.notebook_specs(model, "05"))   # {name: SAE}, trained once
    zoo.table(model, zoo_catalog.notebook_specs(model, "05"))             # their numbers and gates
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from saelab import stats
from saelab._version import __version__
from saelab.activation_cache import ShardedTokens
from saelab.activations import load_activations
from saelab.checkpoints import find_checkpoints
from saelab.config import cache_dir, smoke_mode
from saelab.io import read_json, sha256_text
from saelab.metrics import core_metrics, reconstruction_metrics
from saelab.models import load_model, model_fingerprint, model_name
from saelab.sae import SAE
from saelab.train import train_sae
from saelab.train_sparse import fast_selection_dtype, has_sparse_path
from saelab.zoo_catalog import NOTEBOOKS, all_specs, catalog_hooks
from saelab.zoo_corpus import (  # noqa: F401 - the corpus's names, re-exported: notebooks read them as zoo.*
    CORPUS_NAME,
    CORPUS_TOPICS_SMOKE,
    CORPUS_TWEETS_SMOKE,
    EXTRACT_BATCH,
    HELDOUT,
    HELDOUT_SMOKE,
    STORAGE_DTYPE,
    corpus_folder,
    corpus_forward_dtype,
    corpus_model,
    corpus_record,
    heldout_folder,
    heldout_texts,
    resolve_corpus,
    training_texts,
    training_tokens,
)
from saelab.zoo_spec import SAESpec, budget


@dataclass(frozen=True)
class QualityGate:
    """The least an SAE must reach on held-out text before a verdict may rest on it."""

    min_explained_variance: float
    min_ce_loss_score: float
    min_frac_alive: float
    max_l0: float | None = None

    def check(self, quality: Mapping[str, float]) -> list[str]:
        """What falls short, as readable reasons ([] when the SAE passes)."""
        short = []
        for key, least in (("explained_variance", self.min_explained_variance),
                           ("ce_loss_score", self.min_ce_loss_score), ("frac_alive", self.min_frac_alive)):
            if quality[key] < least:
                short.append(f"{key} {quality[key]:.3f} < {least}")
        if self.max_l0 is not None and quality["l0"] > self.max_l0:
            short.append(f"l0 {quality['l0']:.0f} > {self.max_l0:g}")
        return short


#: declared before the zoo was built. TopK-style SAEs fix L0 by k; ReLU and JumpReLU choose their own L0, so they
#: get an L0 ceiling (denser codes reconstruct more, and would pass on density alone) and a lower EV bar
QUALITY_GATES = {
    "topk": QualityGate(0.8, 0.9, 0.5),
    "batchtopk": QualityGate(0.8, 0.9, 0.5),
    "relu": QualityGate(0.7, 0.85, 0.3, max_l0=128),
    "jumprelu": QualityGate(0.7, 0.85, 0.3, max_l0=128),
}


# ------------------------------------------------------------------------------------------------------------------
# Keys, folders, gates
# ------------------------------------------------------------------------------------------------------------------

#: training options that change a trained SAE by no more than rounding and near-ties, so not part of its key (like
#: the device): the bfloat16 selection of (token, latent) pairs (`TrainConfig.selection_dtype`)
NOT_IN_KEY = ("selection_dtype",)


def spec_key(model, spec: SAESpec, corpus: dict[str, Any]) -> str:
    """What identifies a trained SAE: model weights, the spec, the full training config (trainer defaults
    included, so a changed recipe retrains; `NOT_IN_KEY` aside), the corpus and the saelab version."""
    recipe = {k: v for k, v in spec.train_config().to_dict().items() if k not in NOT_IN_KEY}
    payload = {"model": model_fingerprint(model), "spec": dataclasses.asdict(spec), "corpus": corpus,
               "train_config": recipe, "saelab_version": __version__}
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))[:16]


def sae_folder(model, spec: SAESpec, key: str) -> Path:
    """Where the SAE of `spec` lives in saelab's cache (readable name + key)."""
    name = f"{model_name(model)}-{spec.hook}-{spec.architecture}-{spec.d_sae}-{key}".replace("/", "_")
    return cache_dir("saes") / "zoo" / name


def gate(sae: SAE) -> tuple[bool, str]:
    """(passes, why) for a zoo SAE: smoke-size SAEs and SAEs below their architecture's gate never pass."""
    meta = sae.cfg.metadata
    quality = meta.get("zoo_quality")
    if quality is None:
        return False, "no quality record (not a zoo SAE): its gate cannot be checked"
    if meta.get("zoo_spec", {}).get("smoke"):
        return False, "smoke-size SAE: not a finding"
    short = QUALITY_GATES[sae.architecture].check(quality)
    return (not short), ("passes its quality gate" if not short else "below quality gate: " + "; ".join(short))


def _readable(name: Any) -> str:
    """A notebook's key for an SAE as text: a string, a tuple key joined by "/", or a spec's label (a zoo
    SAESpec or a pretrained one)."""
    if isinstance(name, tuple):
        return "/".join(map(str, name))
    label = getattr(name, "label", None)
    return label if isinstance(label, str) else str(name)


def gate_report(saes: Mapping[Any, SAE] | Sequence[SAE]) -> tuple[bool, str]:
    """(all pass, a readable report) for the SAEs a notebook's verdicts rest on."""
    failing, report = _gate_failures(_named(saes))
    return not failing, report


def _named(saes: Mapping[Any, SAE] | Sequence[SAE]) -> dict[str, SAE]:
    """{readable name: SAE}; a plain sequence is named by hook."""
    named = dict(saes) if isinstance(saes, Mapping) else {sae.cfg.hook_name: sae for sae in saes}
    return {_readable(name): sae for name, sae in named.items()}


def _gate_failures(named: Mapping[str, SAE]) -> tuple[dict[str, str], str]:
    results = {name: gate(sae) for name, sae in named.items()}
    failing = {name: why for name, (ok, why) in results.items() if not ok}
    if not failing:
        return failing, f"All {len(results)} SAEs behind these verdicts pass their quality gates."
    lines = [f"{len(failing)} of {len(results)} SAEs behind these verdicts do not pass their quality gate, so "
             "every verdict resting on one of them is 'inconclusive' (the rule's own outcome is kept beside it):"]
    return failing, "\n".join(lines + [f"  {name}: {why}" for name, why in failing.items()])


def gate_claims(claims: pd.DataFrame, column: str, saes: Mapping[Any, SAE] | Sequence[SAE]) -> pd.DataFrame:
    """`claims` with its verdict `column` made 'inconclusive: SAE below quality gate' where an SAE the claim rests
    on fails its gate (or is smoke-size); the rule's outcome moves to "rule outcome" and the failing SAEs to "below
    gate". A row's SAEs are its "rests on" entry (`stats.verdict(rests_on=...)`, keys of `saes`); a row without
    one rests on every SAE in `saes`. A claim the rule found "not testable" (a precondition failed) stays so: it was
    never tested, whatever the SAEs. Prints the gate report."""
    named = _named(saes)
    failing, report = _gate_failures(named)
    print(report)
    if not failing:
        return claims
    rests = claims["rests on"] if "rests on" in claims else [()] * len(claims)
    below = []
    for claim, keys in zip(claims.iloc[:, 0], rests):
        names = [_readable(key) for key in keys] or list(named)
        unknown = [name for name in names if name not in named]
        if unknown:
            raise ValueError(f"Claim {claim!r} rests on {unknown}, which are not among the SAEs given to gate it "
                             f"({list(named)}): pass every SAE the claims name.")
        below.append("; ".join(name for name in names if name in failing))
    gated = claims.copy()
    at = gated.columns.get_loc(column)
    gated.insert(at, "rule outcome", gated[column])
    gated.insert(at + 2, "below gate", below)
    hit = (gated["below gate"] != "") & ~gated[column].astype(str).str.startswith("not testable")
    gated.loc[hit, column] = "inconclusive: SAE below quality gate"
    return gated


SMOKE_BANNER = ("SMOKE RUN: these numbers come from smoke-size SAEs on a few dozen texts. They test the code, "
                "they are not findings; every verdict below says so.")


def verdict_table(verdicts, saes, *, smoke: bool, paper_numbers: Mapping[str, str] | Sequence[str],
                  banner: str = SMOKE_BANNER, claim_id: Callable[[str], str] = lambda claim: claim.split()[0],
                  signed: bool = False) -> pd.DataFrame:
    """A notebook's claims table: `saelab.stats.claims_table(verdicts)` with the paper's number (looked up by
    `claim_id(claim)` in `paper_numbers`, or one per verdict when a sequence) and ours (value and interval), gated on
    the quality of `saes` (`gate_claims`; none to gate: an empty list); in a smoke run it prints `banner` and marks
    every verdict as no finding. signed: show ours with its sign (for differences)."""
    table = stats.claims_table(verdicts)
    if isinstance(paper_numbers, Mapping):
        paper_numbers = [paper_numbers.get(claim_id(c), "") for c in table.claim]
    if len(paper_numbers) != len(table):
        raise ValueError(f"{len(paper_numbers)} paper numbers for {len(table)} claims: give one per claim.")
    table.insert(1, "paper's number", list(paper_numbers))
    number = "{:+.3f}" if signed else "{:.3f}"
    ours = [f"{number.format(v)} {i}" if np.isfinite(v) else "" for v, i in zip(table.value, table.interval)]
    table.insert(3, "ours", ours)
    if len(saes):
        table = gate_claims(table, "verdict", saes)
    if smoke:
        print(banner)
        table["verdict"] = "smoke run, not a finding: " + table["verdict"].astype(str)
    return table


def load_if_trained(folder: Path, key: str) -> SAE | None:
    """The SAE saved at `folder` if it is complete and was trained for `key`; None otherwise."""
    try:
        recorded = read_json(folder / "cfg.json").get("metadata", {}).get("zoo_key")
        return SAE.load(folder) if recorded == key else None
    except (OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------------------------------------------
# Getting SAEs
# ------------------------------------------------------------------------------------------------------------------

def _check_specs(specs) -> dict[Any, SAESpec]:
    example = "pass a list such as [saelab.SAESpec('blocks.6.hook_resid_post')] or a {name: SAESpec} dict"
    if isinstance(specs, Mapping):
        named = dict(specs)
    else:
        try:
            named = {spec: spec for spec in specs}
        except TypeError:
            raise TypeError(f"specs must be a list of SAESpec, not {specs!r}: {example}") from None
        if len(named) != len(list(specs)):
            raise ValueError("the same SAESpec appears twice in specs: give each SAESpec once")
    if not named:
        raise ValueError(f"get_saes needs at least one SAESpec: {example}")
    wrong = [s for s in named.values() if not isinstance(s, SAESpec)]
    if wrong:
        raise TypeError(f"specs must hold SAESpec objects, not {wrong[0]!r}: wrap it as saelab.SAESpec(...)")
    return named


def get_saes(model, specs: Sequence[SAESpec] | Mapping[Any, SAESpec], *, texts: Sequence[str] | None = None,
             corpus_name: str | None = None, smoke: bool | None = None, progress: bool = True) -> dict[Any, SAE]:
    """Load each SAE of `specs` from the cache, training the missing ones.

    specs: a list of SAESpec (returns ``{spec: SAE}``) or a ``{name: SAESpec}`` dict (returns ``{name: SAE}``).
    texts: the training corpus (default `training_texts()`); pass `corpus_name` with your own texts.
    smoke: shrink every spec (`SAESpec.scaled_for_smoke`); defaults to `saelab.smoke_mode()`.
    """
    named = _check_specs(specs)
    smoke = smoke_mode() if smoke is None else smoke
    corpus = resolve_corpus(model, texts, corpus_name, smoke)[1]
    actual = {spec: spec.scaled_for_smoke() if smoke else spec for spec in dict.fromkeys(named.values())}  # in order
    keys = {spec: spec_key(model, actual[spec], corpus) for spec in actual}
    found = {spec: load_if_trained(sae_folder(model, actual[spec], keys[spec]), keys[spec]) for spec in actual}
    missing = list({keys[spec]: spec for spec in actual if found[spec] is None}.values())  # smoke: widths merge
    if missing:
        folder, hooks = training_tokens(model, texts, corpus_name, {spec.hook for spec in missing}, smoke, progress)
        heldout = Heldout(model, hooks, smoke, progress)
        bar = tqdm(total=sum(actual[s].tokens for s in missing), desc="training SAEs", unit="tok", unit_scale=True,
                   disable=not progress)
        for spec in missing:
            bar.set_postfix_str(spec.label)
            trained = _train_one(model, actual[spec], keys[spec], folder, heldout, bar)
            found |= {same: trained for same in actual if keys[same] == keys[spec]}
        bar.close()
    return {name: found[spec] for name, spec in named.items()}


class Heldout:
    """Held-out token activations (float32) and texts for scoring a newly trained SAE."""

    def __init__(self, model, hooks: list[str], smoke: bool, progress: bool):
        texts = heldout_texts(smoke)
        sizes = HELDOUT_SMOKE if smoke else HELDOUT
        self.ce_texts = texts[:sizes["ce_texts"]]
        folder = heldout_folder(model, hooks, smoke, progress)
        self.acts = {h: t.float() for h, t in load_activations(folder).acts.items()}

    def quality(self, model, sae: SAE) -> dict[str, float]:
        core = core_metrics(sae, self.acts[sae.cfg.hook_name], progress=False)
        recon = reconstruction_metrics(model, sae, self.ce_texts, progress=False)
        scores = {key: float(core[key]) for key in ("explained_variance", "l0", "frac_alive")}
        return scores | {"ce_loss_score": float(recon["ce_loss_score"]), "n_tokens": int(core["n_tokens"])}


def heldout_token_variance(model, hook: str, smoke: bool | None = None) -> float:
    """Mean squared distance of a held-out token activation from the held-out mean at `hook`: the per-token
    denominator of the zoo's held-out explained variance (read from the activation cache once it is built)."""
    smoke = smoke_mode() if smoke is None else smoke
    hooks = catalog_hooks(model) if hook in catalog_hooks(model) else [hook]  # the zoo's cache when it has the hook
    source = ShardedTokens(heldout_folder(model, hooks, smoke), hook)
    acts = torch.cat([chunk.float() for chunk in source])
    return float(((acts - acts.mean(0)) ** 2).sum(-1).mean())


def training_device() -> str:
    """Where zoo SAEs train: the GPU when there is one (same batches and recipe, fp32 weights; the sparse TopK
    kernels are the CPU path), else the CPU. Not part of an SAE's key: the result is the same SAE up to rounding."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def selection_dtype(spec: SAESpec, device: str) -> str:
    """bfloat16 selection of the (token, latent) pairs on CPUs that multiply bfloat16 fast (`fast_selection_dtype`),
    float32 otherwise; recorded in each SAE's training config, not in its key."""
    if device != "cpu" or not has_sparse_path(spec.architecture):
        return "float32"
    return fast_selection_dtype()


def _train_one(model, spec: SAESpec, key: str, token_folder: Path, heldout: Heldout, bar) -> SAE:
    folder = sae_folder(model, spec, key)
    ckpt_dir = folder.with_name(folder.name + ".checkpoints")
    source = ShardedTokens(token_folder, spec.hook)
    device = training_device()
    tcfg = spec.train_config(checkpoint_dir=str(ckpt_dir), device=device, selection_dtype=selection_dtype(spec, device),
                             checkpoint_every=max(10, spec.tokens // spec.batch_size // 10))
    resume = bool(find_checkpoints(ckpt_dir))
    done = [0]

    def advance(step: int, sae: SAE, metrics: dict[str, float]) -> None:
        if not done[0]:  # a resumed run starts at its checkpoint's step
            bar.update((step - 1) * spec.batch_size)
        done[0] = step
        bar.update(spec.batch_size)

    started = time.perf_counter()
    sae = train_sae(source, spec.sae_config(source.d_in), tcfg, callback=advance, resume=resume, progress=False)
    sae.cfg.metadata.update(zoo_key=key, zoo_spec=dataclasses.asdict(spec), zoo_seconds=time.perf_counter() - started)
    sae.cfg.metadata["zoo_quality"] = heldout.quality(model, sae)
    saved = SAE.load(sae.save(folder))  # what later runs will load (BatchTopK comes back in its thresholded form)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return saved


def get_sae(model, hook: str, architecture: str = "topk", **spec_fields: Any) -> SAE:
    """One SAE: ``get_sae(model, "blocks.6.hook_resid_post", "topk", k=32, d_sae=4096)``; see `get_saes`."""
    progress = spec_fields.pop("progress", True)
    spec = SAESpec(hook=hook, architecture=architecture, **spec_fields)
    return get_saes(model, [spec], progress=progress)[spec]


# ------------------------------------------------------------------------------------------------------------------
# The zoo at a glance, and building all of it
# ------------------------------------------------------------------------------------------------------------------

def table(model, specs: Sequence[SAESpec] | Mapping[Any, SAESpec] | None = None, *, texts: Sequence[str] | None = None,
          corpus_name: str | None = None, smoke: bool | None = None) -> pd.DataFrame:
    """Every SAE of `specs` (default: the whole catalog for `model`) with its held-out numbers and its gate;
    reads the cache only (an SAE not built yet shows as such). `texts` / `corpus_name` as in `get_saes`."""
    smoke = smoke_mode() if smoke is None else smoke
    named = _check_specs(specs if specs is not None else list(all_specs(model)))
    corpus = resolve_corpus(model, texts, corpus_name, smoke)[1]
    rows = []
    for name, spec in named.items():
        actual = spec.scaled_for_smoke() if smoke else spec
        key = spec_key(model, actual, corpus)
        sae = load_if_trained(sae_folder(model, actual, key), key)
        row = {"name": _readable(name), "architecture": spec.architecture,
               "d_sae": actual.d_sae, "hook": spec.hook, "train tokens": actual.tokens}
        if sae is None:
            rows.append(row | {"gate": "not built (run make zoo)"})
            continue
        quality = sae.cfg.metadata["zoo_quality"]
        passes, why = gate(sae)
        rows.append(row | {k: round(quality[k], 3) for k in ("explained_variance", "ce_loss_score", "l0",
                                                            "frac_alive")}
                    | {"minutes": round(sae.cfg.metadata.get("zoo_seconds", 0) / 60, 1),
                       "gate": "pass" if passes else why})
    return pd.DataFrame(rows).set_index("name")


def build(models: Sequence[str] = ("gemma-3-270m", "smollm2-135m"), *, notebooks: Sequence[str] = NOTEBOOKS,
          smoke: bool | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every SAE of the catalog for each model (`make zoo`), or only those `notebooks` use (e.g. ``["07"]``
    before a class on notebook 07); idempotent and resumable (cached SAEs load, a killed training run continues from
    its last checkpoint). Returns the zoo table with a `model` column; ``frame.attrs["phase_minutes"]`` holds this
    run's wall-clock minutes per model and phase (loading the model, extracting the corpus and held-out texts,
    training and scoring the SAEs)."""
    smoke = smoke_mode() if smoke is None else smoke
    frames, phases = [], {}
    for name in models:
        clock = time.perf_counter()
        model = load_model(name)
        specs = list(all_specs(model, notebooks))
        phases[name] = {"load model": time.perf_counter() - clock}
        if specs:
            clock = time.perf_counter()
            unbuilt = table(model, specs, smoke=smoke)["gate"].str.startswith("not built").any()
            if unbuilt and {spec.hook for spec in specs} <= set(catalog_hooks(model)):  # get_saes' extraction
                heldout_folder(model, catalog_hooks(model), smoke, progress)
                corpus_folder(model, smoke, progress)
            phases[name]["extract"] = time.perf_counter() - clock
            clock = time.perf_counter()
            get_saes(model, specs, smoke=smoke, progress=progress)
            frames.append(table(model, specs, smoke=smoke).assign(model=name))
            phases[name]["train and score"] = time.perf_counter() - clock
    frame = pd.concat(frames) if frames else pd.DataFrame()
    frame.attrs["phase_minutes"] = {name: {k: round(v / 60, 1) for k, v in p.items()} for name, p in phases.items()}
    return frame


__all__ = ["CORPUS_NAME", "NOTEBOOKS", "QUALITY_GATES", "SMOKE_BANNER", "STORAGE_DTYPE", "QualityGate", "SAESpec",
           "budget", "build", "Heldout", "corpus_folder", "corpus_forward_dtype", "corpus_model", "corpus_record",
           "gate_claims", "gate_report", "training_device", "gate", "get_sae", "get_saes", "heldout_texts",
           "load_if_trained", "resolve_corpus", "sae_folder", "spec_key", "table", "training_texts", "training_tokens",
           "verdict_table"]
