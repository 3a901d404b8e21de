"""A bad-input table: every public entry point, fed the inputs a learner gets wrong, must fail with a clear error.

Each row is (id, a call, the exception type, substrings of the message). The substrings check two things: the
message names the bad value (the number, the hook name, the file, the word) and says what to do ("give",
"use", "pass", "delete", "choose", "check", "must", ...). A bare IndexError / KeyError / TypeError from deep inside
torch, or a message that only restates the failure, fails its row.

Covered: `load_model`, `load_task`, `extract` (texts, hooks, poolings, position selectors, its on-disk cache and
`load_activations` / `ShardedTokens` on folders edited by hand), `SAEConfig` / `SAE.load` (truncated weights,
broken or inconsistent cfg.json), `SAE.encode` / `decode`, `train_sae` / `TrainConfig`, `zoo.get_saes`, the
probing functions, PS-Eval (`saelab.polysemy`), steering (`saelab.steering`), the metrics, `latent_records`, and
each widget's callbacks. Widgets never raise: their rows read the error the status bar shows instead (`Shown`).

Everything runs on the tiny random model (`tiny` fixture) and SAEs with d_in=64, d_sae=8, built once per session.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import saelab
from saelab import metrics, probing, zoo
from saelab import polysemy as ps
from saelab import polysemy_eval as pse
from saelab import steering as st
from saelab import steering_eval as se
from saelab.activation_cache import ShardedTokens
from saelab.activations import extract, last_occurrence, load_activations
from saelab.latents import latent_records
from saelab.sae import SAE, SAEConfig
from saelab.tasks import WiCPair
from saelab.train import TrainConfig, train_sae

pytest.importorskip("ipywidgets")
pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.0.hook_resid_post"
TEXTS = ["the cat sat", "a dog ran home"]
NAN_ROWS = torch.full((3, 64), float("nan"))


# ------------------------------------------------------------------------------------------------------------------
# The table's machinery
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable[[SimpleNamespace], Any]
    error: type[BaseException]
    needles: tuple[str, ...]  # the bad value, then a phrase that says what to do


def row(id: str, call: Callable[[SimpleNamespace], Any], error: type[BaseException], *needles: str) -> Row:
    return Row(id, call, error, needles)


class Shown(Exception):
    """A widget callback showed an error message (its plain text) in its status bar, as it should."""


class ShownTraceback(Exception):
    """A widget callback showed a traceback: an internal error, not a message about the input."""


def shown(status_bar, callback: Callable, *args: Any, **kwargs: Any) -> None:
    """Run a widget callback (it must not raise) and raise what its status bar then shows as an error."""
    from saelab.widgets._common import ERROR_CLASS

    status_bar.clear()
    callback(*args, **kwargs)
    value = status_bar.message.value
    if ERROR_CLASS in status_bar.message._dom_classes:
        text = html.unescape(re.sub(r"<[^>]+>", "", value.split("<details")[0]))
        raise (ShownTraceback if "<details" in value else Shown)(text)


_counter = itertools.count()


def fresh(env, name: str) -> Path:
    """A new, empty folder for one row."""
    return env.root / f"{name}-{next(_counter)}"


def damaged_sae(env, edit: Callable[[Path], Any], source: str = "sae_folder") -> Path:
    """A copy of a saved SAE folder, edited by hand."""
    folder = fresh(env, "sae")
    shutil.copytree(getattr(env, source), folder)
    edit(folder)
    return folder


def edit_cfg(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "cfg.json").read_text())
        change(cfg)  # edits in place
        (folder / "cfg.json").write_text(json.dumps(cfg))
    return edit


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def drop_tensor(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        tensors = load_file(folder / "sae_weights.safetensors")
        del tensors[name]
        save_file(tensors, folder / "sae_weights.safetensors")
    return edit


def damaged_cache(env, edit: Callable[[Path], Any], pooling: str = "none") -> Path:
    """A fresh two-shard activation cache of TEXTS, then edited by hand."""
    folder = fresh(env, "acts")
    extract(env.model, TEXTS, HOOK, pooling, cache=folder, shard_size=1, progress=False)
    edit(folder)
    return folder


def edit_manifest(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)  # edits in place
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return edit


def pair(word="a", c1="I saw a cat", c2="a dog ran", label=1, **kw) -> WiCPair:
    return WiCPair(word=word, pos="", context_1=c1, context_2=c2, label=label, **kw)


# ------------------------------------------------------------------------------------------------------------------
# Shared objects, built once
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def env(tiny, tmp_path_factory):
    from saelab import widgets

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("bad_inputs")
        patch.setenv("SAELAB_CACHE_DIR", str(root / "cache"))  # get_saes and cache=True stay in here
        sae = SAE(SAEConfig(d_in=64, d_sae=8, architecture="relu", hook_name=HOOK), seed=0).eval()
        topk = SAE(SAEConfig(d_in=64, d_sae=8, architecture="topk", k=2, hook_name=HOOK), seed=0).eval()
        narrow = SAE(SAEConfig(d_in=32, d_sae=8, architecture="relu", hook_name=HOOK), seed=0).eval()
        tokens = extract(tiny, TEXTS, HOOK, "none", progress=False)
        records = latent_records(tiny, sae, TEXTS * 2, progress=False)
        few = latent_records(tiny, sae, TEXTS, latents=[0, 1], progress=False)
        probe = ps.prepare_pairs([pair(), pair(label=0)], tiny.tokenizer)
        probe_acts = ps.extract_probe(tiny, probe, HOOK, cache=False, progress=False)  # PS-Eval reads of 2 pairs
        rng = np.random.default_rng(0)
        X = rng.poisson(1.0, size=(24, 8)).astype(np.float32)
        y = np.arange(24) % 2
        max_acts = torch.ones(8)
        max_acts[3] = 0.0  # latent 3 "never fired"
        env = SimpleNamespace(
            model=tiny, sae=sae, narrow=narrow, root=root, tokens=tokens, few=few, probe_acts=probe_acts, X=X, y=y,
            sae_folder=sae.save(root / "sae"), topk_folder=topk.save(root / "topk"),
            browser=widgets.latent_browser(records, model=tiny, sae=sae),
            playground=widgets.steering_playground(tiny, sae, max_acts, latent=0, max_new_tokens=4),
            polysemy=widgets.polysemy_explorer(tiny, sae, pairs=[pair(), pair(label=0)]),
            pooling=widgets.pooling_explorer(tiny, texts=TEXTS, layer=0),
            binarization=widgets.binarization_explorer({"counts": (X[:16], X[16:])}, y[:16], y[16:], n_boot=10),
        )
        yield env


# ------------------------------------------------------------------------------------------------------------------
# The rows
# ------------------------------------------------------------------------------------------------------------------

MODELS_AND_TASKS = [
    row("load_model-bytes", lambda e: saelab.load_model(b"gpt2"), TypeError, "b'gpt2'", "such as 'gemma-3-270m'"),
    row("load_model-empty", lambda e: saelab.load_model(""), ValueError, "''", "give one such as 'gemma-3-270m'"),
    row("load_model-int", lambda e: saelab.load_model(42), TypeError, "42", "such as 'gemma-3-270m'"),
    row("load_model-list", lambda e: saelab.load_model(["gpt2"]), TypeError, "['gpt2']", "such as 'gemma-3-270m'"),
    row("load_model-unknown", lambda e: saelab.load_model("gemma-3-270"), saelab.ModelNotAvailableError,
        "'gemma-3-270'", "use an embedded model"),
    row("load_task-unknown", lambda e: saelab.load_task("wordnet_wic"), ValueError, "'wordnet_wic'",
        "Did you mean 'wordnet-wic'"),
    row("load_task-None", lambda e: saelab.load_task(None), TypeError, "None", "such as 'wordnet-wic'"),
    row("load_task-n-too-small", lambda e: saelab.load_task("tweet-sentiment", n=3), ValueError, "n=3",
        "need at least 6"),
    row("load_task-test_size-None", lambda e: saelab.load_task("wordnet-wic", test_size=None), ValueError,
        "None", "must be a fraction between 0 and 1"),
    row("load_task-extra-kwarg", lambda e: saelab.load_task("wordnet-wic", config="x"), TypeError, "['config']",
        "drop them"),
]


def extract_with(e, texts=TEXTS, hook=HOOK, **kwargs):
    return extract(e.model, texts, hook, progress=False, **kwargs)


EXTRACT = [
    row("extract-texts-empty", lambda e: extract_with(e, texts=[]), ValueError, "`texts` is empty",
        "give at least one text"),
    row("extract-texts-None", lambda e: extract_with(e, texts=None), TypeError, "None", "must be a list of strings"),
    row("extract-hook-unknown", lambda e: extract_with(e, hook="blocks.9.hook_resid_post"), ValueError,
        "'blocks.9.hook_resid_post'", "The model has 2 blocks"),
    row("extract-hook-None", lambda e: extract_with(e, hook=None), TypeError, "None",
        "such as 'blocks.6.hook_resid_post'"),
    row("extract-pooling-unknown", lambda e: extract_with(e, pooling="median"), ValueError, "'median'",
        "Choose one of"),
    row("extract-batch_size-zero", lambda e: extract_with(e, batch_size=0), ValueError, "batch_size=0",
        "must all be positive integers"),
    row("extract-max_length-one", lambda e: extract_with(e, max_length=1), ValueError,
        "Text 0 has no token left to pool", "Raise max_length"),
    row("extract-selector-out-of-range", lambda e: extract_with(e, positions=lambda t: [99]), ValueError,
        "returned [99] for text 0", "must return positions between 0 and"),
    row("extract-word-absent", lambda e: extract_with(e, positions=last_occurrence("zebra")), ValueError,
        "found no position in text 0", "pass allow_missing=True"),
    row("extract-words-too-few", lambda e: extract_with(e, positions=last_occurrence(["cat"])), ValueError,
        "1 word(s) for text 1", "give one word for every text"),
    row("last_occurrence-empty-word", lambda e: last_occurrence(""), ValueError, "''", "give the word"),
    row("last_occurrence-None", lambda e: last_occurrence(None), TypeError, "None", "give the word"),
]


def load_edited_cache(e, edit, pooling: str = "none"):
    return load_activations(damaged_cache(e, edit, pooling))


def delete(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


ACTIVATION_CACHE = [
    row("cache-path-is-a-file", lambda e: extract_with(e, cache=e.sae_folder / "cfg.json"), NotADirectoryError,
        "cfg.json", "pass a folder"),
    row("cache-manifest-deleted", lambda e: load_edited_cache(e, delete("manifest.json")), FileNotFoundError,
        "no manifest.json", "run saelab.extract(..., cache=...)"),
    row("cache-manifest-garbage", lambda e: load_edited_cache(e, lambda f: (f / "manifest.json").write_text("{oops")),
        ValueError, "manifest.json", "call extract() again to rebuild"),
    row("cache-shard-deleted", lambda e: load_edited_cache(e, delete("shard_00001.safetensors")), ValueError,
        "['shard_00001.safetensors']", "call extract() again to rebuild"),
    row("cache-shard-truncated", lambda e: load_edited_cache(e, lambda f: truncate(f / "shard_00000.safetensors")),
        ValueError, "['shard_00000.safetensors']", "call extract() again"),
    row("cache-entry-without-sha256", lambda e: load_edited_cache(e, edit_manifest(
        lambda m: m["shards"]["0"].pop("sha256"))), ValueError, "'sha256'", "call extract() again to rebuild"),
    row("cache-meta-without-hooks", lambda e: load_edited_cache(e, edit_manifest(lambda m: m["meta"].pop("hooks"))),
        ValueError, "'hooks'", "call extract() again to rebuild"),
    row("cache-no-shards", lambda e: load_edited_cache(e, edit_manifest(lambda m: m.update(shards={}))), ValueError,
        "no shards", "call extract() again to rebuild"),
    row("sharded-tokens-no-manifest", lambda e: ShardedTokens(fresh(e, "empty"), HOOK), FileNotFoundError,
        "no manifest.json", "run saelab.extract(..., cache=...)"),
    row("sharded-tokens-unknown-hook", lambda e: ShardedTokens(damaged_cache(e, lambda f: None),
                                                               "blocks.1.hook_resid_post"), ValueError,
        "'blocks.1.hook_resid_post'", "pass one of them"),
    row("sharded-tokens-pooled-cache", lambda e: ShardedTokens(damaged_cache(e, lambda f: None, "mean"), HOOK),
        ValueError, "'mean'", "extract with pooling='none'"),
]


def load_edited_sae(e, edit, source: str = "sae_folder"):
    return SAE.load(damaged_sae(e, edit, source))


SAE_FILES = [
    row("SAEConfig-topk-k-zero", lambda e: SAEConfig(d_in=64, d_sae=8, architecture="topk", k=0), ValueError,
        "got k=0", "must be between 1 and d_sae=8"),
    row("SAEConfig-topk-k-above-d_sae", lambda e: SAEConfig(d_in=64, d_sae=8, architecture="topk", k=9),
        ValueError, "got k=9", "must be between 1 and d_sae=8"),
    row("SAE.encode-wrong-d_in", lambda e: e.sae.encode(torch.zeros(3, 32)), ValueError, "got 32",
        "use activations of its hook"),
    row("SAE.decode-wrong-d_sae", lambda e: e.sae.decode(torch.zeros(3, 9)), ValueError, "got 9",
        "must have d_sae=8"),
    row("SAE.load-None", lambda e: SAE.load(None), TypeError, "None", "give the folder"),
    row("SAE.load-missing-folder", lambda e: SAE.load(e.root / "nowhere"), FileNotFoundError, "nowhere",
        "check the path"),
    row("SAE.load-no-cfg", lambda e: load_edited_sae(e, delete("cfg.json")), FileNotFoundError, "no cfg.json",
        "save the SAE there again"),
    row("SAE.load-truncated-weights", lambda e: load_edited_sae(e, lambda f: truncate(f / "sae_weights.safetensors")),
        ValueError, "sae_weights.safetensors", "delete the folder"),
    row("SAE.load-weights-missing-tensor", lambda e: load_edited_sae(e, drop_tensor("b_dec")), ValueError,
        "no tensor 'b_dec'", "save the SAE again"),
    row("SAE.load-cfg-not-json", lambda e: load_edited_sae(e, lambda f: (f / "cfg.json").write_text("{")),
        ValueError, "cfg.json", "fix or delete it"),
    row("SAE.load-cfg-a-list", lambda e: load_edited_sae(e, lambda f: (f / "cfg.json").write_text("[1]")),
        ValueError, "JSON list", "fix or delete it"),
    row("SAE.load-cfg-missing-d_sae", lambda e: load_edited_sae(e, edit_cfg(lambda c: c.pop("d_sae"))), ValueError,
        "no 'd_sae'", "save the SAE again"),
    row("SAE.load-cfg-wrong-d_in", lambda e: load_edited_sae(e, edit_cfg(lambda c: c.update(d_in=65))), ValueError,
        "d_in=65", "save the SAE again"),
    row("SAE.load-cfg-d_in-not-a-number", lambda e: load_edited_sae(e, edit_cfg(lambda c: c.update(d_in="64x"))),
        ValueError, "'64x'", "must be a positive integer"),
    row("SAE.load-cfg-topk-without-k", lambda e: load_edited_sae(e, edit_cfg(
        lambda c: (c.pop("k"), c["metadata"]["saelab_config"].pop("k"))), "topk_folder"), ValueError,
        "cfg.json", "need k"),
    row("SAE.load-dtype-argument", lambda e: SAE.load(e.sae_folder, dtype="float8"), ValueError, "'float8'",
        "must be one of"),
]


def train_on(e, activations, cfg=None, train_cfg=None):
    cfg = e.sae.cfg if cfg is None else cfg
    train_cfg = TrainConfig(n_steps=1, batch_size=4) if train_cfg is None else train_cfg
    return train_sae(activations, cfg, train_cfg, progress=False)


TRAIN = [
    row("train_sae-None", lambda e: train_on(e, None), TypeError, "NoneType", "must be a tensor or a TokenSource"),
    row("train_sae-empty-list", lambda e: train_on(e, []), TypeError, "list", "must be a tensor or a TokenSource"),
    row("train_sae-no-rows", lambda e: train_on(e, torch.zeros(0, 64)), ValueError, "(0, 64)", "give at least one"),
    row("train_sae-nan-rows", lambda e: train_on(e, torch.cat([torch.zeros(5, 64), NAN_ROWS])), ValueError,
        "NaN or inf", "drop or fix those rows"),
    row("train_sae-wrong-d_in", lambda e: train_on(e, torch.zeros(8, 32)), ValueError, "d_in=32",
        "use SAEConfig(d_in=32"),
    row("train_sae-cfg-a-dict", lambda e: train_on(e, torch.zeros(8, 64), cfg={"d_in": 64}), TypeError, "dict",
        "pass saelab.SAEConfig"),
    row("train_sae-train_cfg-a-dict", lambda e: train_on(e, torch.zeros(8, 64), train_cfg={"n_steps": 1}),
        TypeError, "dict", "pass saelab.TrainConfig"),
    row("TrainConfig-n_steps-zero", lambda e: TrainConfig(n_steps=0), ValueError, "n_steps=0",
        "must be a positive integer"),
]

ZOO = [
    row("get_saes-empty", lambda e: zoo.get_saes(e.model, []), ValueError, "at least one SAESpec",
        "pass a list such as"),
    row("get_saes-None", lambda e: zoo.get_saes(e.model, None), TypeError, "None", "pass a list such as"),
    row("get_saes-not-a-spec", lambda e: zoo.get_saes(e.model, [HOOK], texts=TEXTS, corpus_name="t"), TypeError,
        "'blocks.0.hook_resid_post'", "wrap it as saelab.SAESpec"),
    row("get_saes-twice", lambda e: zoo.get_saes(e.model, [zoo.SAESpec(HOOK)] * 2), ValueError, "appears twice",
        "give each SAESpec once"),
    row("get_saes-texts-without-name", lambda e: zoo.get_saes(e.model, [zoo.SAESpec(HOOK)], texts=TEXTS),
        ValueError, "your own training texts", "pass corpus_name="),
    row("get_saes-unknown-hook", lambda e: zoo.get_saes(e.model, [zoo.SAESpec("blocks.7.hook_resid_post", d_sae=8,
                                                                             k=2)], texts=TEXTS, corpus_name="t",
                                                        progress=False), ValueError,
        "'blocks.7.hook_resid_post'", "The model has 2 blocks"),
    row("SAESpec-k-zero", lambda e: zoo.SAESpec(HOOK, d_sae=8, k=0), ValueError, "got k=0",
        "must be between 1 and d_sae=8"),
]


def features(e, sae=None, tokens=None, **kwargs):
    return probing.sae_features(sae or e.sae, e.tokens if tokens is None else tokens, poolings=["mean"],
                                progress=False, **kwargs)


PROBING = [
    row("pool_codes-top_n-zero", lambda e: probing.pool_codes(torch.ones(3, 8), [3], "topn", top_n=0), ValueError,
        "top_n=0", "between 1 and d_sae=8"),
    row("pool_codes-empty-text", lambda e: probing.pool_codes(torch.ones(3, 8), [3, 0], "mean"), ValueError,
        "text 1", "check the texts are not empty"),
    row("sae_features-top_n-above-d_sae", lambda e: probing.sae_features(e.sae, e.tokens, progress=False),
        ValueError, "top_n=20", "between 1 and d_sae=8"),
    row("sae_features-unknown-hook", lambda e: features(e, hook="blocks.1.hook_mlp_out"), ValueError,
        "'blocks.1.hook_mlp_out'", "Pass hook= to choose one"),
    row("sae_features-wrong-d_in", lambda e: features(e, sae=e.narrow), ValueError, "got 64",
        "use activations of its hook"),
    row("sae_features-nan-rows", lambda e: features(e, tokens=saelab.Activations(
        [HOOK], "none", {HOOK: NAN_ROWS}, torch.tensor([3]), torch.zeros(3, dtype=torch.long))), ValueError,
        "NaN or inf", "drop or fix"),
    row("sae_features-pooled", lambda e: features(e, tokens=e.tokens.pool("mean")), ValueError, "'mean'",
        "needs token-level activations (pooling='none')"),
    row("binarize-negative", lambda e: probing.binarize(e.X, -1.0), ValueError, "threshold=-1.0",
        "Use a threshold >= 0"),
    row("fit_probe-nan-rows", lambda e: probing.fit_probe(np.full((4, 8), np.nan), [0, 1, 0, 1], e.X, e.y),
        ValueError, "NaN or infinite", "drop those rows"),
    row("fit_probe-Cs", lambda e: probing.fit_probe(e.X, e.y, e.X, e.y, Cs=[0.0]), ValueError, "[0.0]",
        "must be positive"),
    row("take_texts-index", lambda e: probing.take_texts(e.tokens, [5]), ValueError, "[5]", "use indices from 0 to 1"),
    row("label_token_ids-empty-word", lambda e: probing.label_token_ids(e.model.tokenizer, ["", "b"], prefix=""),
        ValueError, "''", "give non-empty label words"),
]

POLYSEMY = [
    row("prepare_pairs-empty", lambda e: ps.prepare_pairs([], e.model.tokenizer), ValueError,
        "The pair list is empty", "load_task('wordnet-wic')"),
    row("prepare_pairs-None", lambda e: ps.prepare_pairs(None, e.model.tokenizer), TypeError, "None",
        "give a list of saelab.WiCPair"),
    row("prepare_pairs-not-a-pair", lambda e: ps.prepare_pairs(["bank"], e.model.tokenizer), TypeError,
        "Item 0 is a str", "build pairs with saelab.WiCPair"),
    row("prepare_pairs-word-None", lambda e: ps.prepare_pairs([pair(word=None)], e.model.tokenizer), TypeError,
        "word=None", "must be strings"),
    row("extract_probe-all-skipped", lambda e: ps.extract_probe(e.model, ps.prepare_pairs(
        [pair(word="zebra")], e.model.tokenizer), HOOK, cache=False), ValueError,
        "'target absent from context 1': 1", "check that each word occurs in both contexts"),
    row("evaluate_sae-hook-not-extracted", lambda e: pse.evaluate_sae(e.sae, e.probe_acts,
                                                                     hook="blocks.1.hook_resid_post"), KeyError,
        "'blocks.1.hook_resid_post'", "Add it to the hooks of extract_probe"),
    row("evaluate_sae-wrong-d_in", lambda e: pse.evaluate_sae(e.narrow, e.probe_acts), ValueError, "got 64",
        "use activations of its hook"),
    row("evaluate_sae-k-zero", lambda e: pse.evaluate_sae(e.sae, e.probe_acts, k=0), ValueError, "k=0",
        "must be a positive integer"),
    row("explain_pair-multi-token", lambda e: pse.explain_pair(e.model, e.sae, "a cat sat", "the cat ran", "cat"),
        ValueError, "'cat' is 3 tokens", "Pick a word that is a single token"),
    row("explain_pair-k-zero", lambda e: pse.explain_pair(e.model, e.sae, "I saw a cat", "a dog ran", "a", k=0),
        ValueError, "k=0", "must be a positive integer"),
    row("confusion-labels", lambda e: ps.confusion([1, 2], [True, False]), ValueError, "[2]",
        "must be 0 (different senses) or 1"),
]

STEERING = [
    row("steering_vectors-latent-too-big", lambda e: st.steering_vectors(e.sae, [8], 1.0, torch.ones(8)),
        ValueError, "Latent 8 does not exist", "choose one from 0 to 7"),
    row("steering_vectors-latent-str", lambda e: st.steering_vectors(e.sae, ["3"], 1.0, torch.ones(8)), ValueError,
        "not '3'", "A latent is an integer between 0 and 7"),
    row("steering_vectors-no-latents", lambda e: st.steering_vectors(e.sae, [], 1.0, torch.ones(8)), ValueError,
        "No latents", "give at least one latent"),
    row("steering_vectors-alpha-word", lambda e: st.steering_vectors(e.sae, [0], "strong", torch.ones(8)),
        ValueError, "'strong'", "must be a number"),
    row("steering_vectors-max_acts-nan", lambda e: st.steering_vectors(e.sae, [0], 1.0, [float("nan")]),
        ValueError, "[nan]", "check max_acts"),
    row("steering_vectors-max_acts-short", lambda e: st.steering_vectors(e.sae, [5, 6], 1.0, torch.ones(3)),
        ValueError, "3 top activations", "give one per latent"),
    row("steer-unknown-hook", lambda e: st.steer(e.model, "blocks.0.hook_nonsense", torch.zeros(64)).__enter__(),
        ValueError, "'blocks.0.hook_nonsense'", "hook_names(model)"),
    row("generate-prompts-None", lambda e: st.generate(e.model, None), TypeError, "None",
        "must be a list of strings"),
    row("generate-max_new_tokens", lambda e: st.generate(e.model, ["hi"], max_new_tokens=0), ValueError,
        "max_new_tokens=0", "must be positive integers"),
    row("generate-vectors-wrong-d", lambda e: st.generate(e.model, ["a"], hook=HOOK, vectors=torch.zeros(32),
                                                          max_new_tokens=1), ValueError, "(32,)",
        "must have shape [64]"),
    row("next_token_logits-unknown-hook", lambda e: st.next_token_logits(e.model, "hi", hook="blocks.3.hook_x",
                                                                         vectors=torch.zeros(64)), ValueError,
        "'blocks.3.hook_x'", "The model has 2 blocks"),
    row("token_confidence-k-above-vocab", lambda e: st.token_confidence(torch.zeros(2, 10), k=11), ValueError,
        "k=11", "choose k between 1 and 10"),
    row("delta_token_confidence-k-zero", lambda e: st.delta_token_confidence(e.model, e.sae, [0], torch.ones(8), k=0),
        ValueError, "got 0", "must be a positive integer"),
    row("delta_token_confidence-latent", lambda e: st.delta_token_confidence(e.model, e.sae, [12], torch.ones(8)),
        ValueError, "Latent 12 does not exist", "choose one from 0 to 7"),
    row("output_score-n_tokens-zero", lambda e: st.output_score(e.model, e.sae, [0], torch.ones(8), n_tokens=0),
        ValueError, "n=0", "choose n between 1 and"),
    row("output_score-sae-without-hook", lambda e: st.output_score(e.model, SAE(SAEConfig(
        d_in=64, d_sae=8, architecture="relu")), [0], torch.ones(8)), ValueError, "no hook_name",
        "set sae.cfg.hook_name"),
    row("input_score-latent-not-recorded", lambda e: st.input_score(e.model, e.sae, [5], e.few), ValueError,
        "Latent 5 was not recorded", "Pass latents=[..., 5]"),
    row("select_latents-n-negative", lambda e: st.select_latents([1, 2, 3], torch.tensor([1.0, 2, 3]), -1),
        ValueError, "n=-1", "must be a positive integer"),
    row("JudgeFreeJudge-ppl", lambda e: se.JudgeFreeJudge(e.model, encoder=object(), ppl_fluent=100,
                                                          ppl_broken=10), ValueError,
        "ppl_fluent=100", "Need 1 <= ppl_fluent < ppl_broken"),
]


def core(e, activations, sae=None):
    return metrics.core_metrics(sae or e.sae, activations, progress=False)


def spliced(e, tokens=TEXTS, sae=None, **kwargs):
    return metrics.reconstruction_metrics(e.model, sae or e.sae, tokens, progress=False, **kwargs)


METRICS = [
    row("core_metrics-no-rows", lambda e: core(e, torch.zeros(0, 64)), ValueError, "no activations",
        "give at least one token activation"),
    row("core_metrics-wrong-d_in", lambda e: core(e, torch.zeros(4, 32)), ValueError, "got 32",
        "use activations of its hook"),
    row("core_metrics-nan-rows", lambda e: core(e, NAN_ROWS), ValueError, "NaN or inf", "drop or fix those rows"),
    row("core_metrics-a-list", lambda e: core(e, [[0.0] * 64]), TypeError, "list",
        "must be a tensor [n, d_in] or a TokenSource"),
    row("mse-shapes", lambda e: metrics.mse(torch.zeros(3, 64), torch.zeros(3, 32)), ValueError, "(3, 32)",
        "must have the same shape"),
    row("explained_variance-empty", lambda e: metrics.explained_variance(torch.zeros(0, 64), torch.zeros(0, 64)),
        ValueError, "no rows", "give at least one"),
    row("reconstruction_metrics-no-tokens", lambda e: spliced(e, []), ValueError, "no texts or tokens",
        "give at least one"),
    row("reconstruction_metrics-unknown-hook", lambda e: spliced(e, hook="blocks.4.hook_resid_post"),
        ValueError, "'blocks.4.hook_resid_post'", "The model has 2 blocks"),
    row("reconstruction_metrics-token-id", lambda e: spliced(e, torch.tensor([[2, 70, 999_999]])), ValueError,
        "999999", "must be between 0 and"),
    row("reconstruction_metrics-wrong-d_in", lambda e: spliced(e, sae=e.narrow), ValueError, "got 64",
        "use activations of its hook"),
    row("reconstruction_metrics-batch_size", lambda e: spliced(e, batch_size=0), ValueError, "batch_size=0",
        "must be a positive integer"),
    row("latent_records-latents", lambda e: latent_records(e.model, e.sae, TEXTS, latents=[3, 99], progress=False),
        ValueError, "[99]", "must be ids between 0 and 7"),
]

WIDGETS = [
    row("browser-latent-too-big", lambda e: shown(e.browser.status_bar, e.browser.show, 99), Shown,
        "Latent 99 does not exist", "choose one from 0 to 7"),
    row("browser-latent-word", lambda e: shown(e.browser.status_bar, e.browser.show, "abc"), Shown, "'abc'",
        "type an integer between 0 and 7"),
    row("browser-search-nothing", lambda e: shown(e.browser.status_bar, e.browser.search, "zzzz"), Shown, "'zzzz'",
        "try a shorter piece"),
    row("playground-latent-word", lambda e: shown(e.playground.status, e.playground.generate, latent="x"), Shown,
        "'x'", "type an integer between 0 and 7"),
    row("playground-alpha-word", lambda e: shown(e.playground.status, e.playground.generate, latent=0, alpha="big"),
        Shown, "'big'", "must be a number such as 5"),
    row("playground-latent-never-fired", lambda e: shown(e.playground.status, e.playground.generate, latent=3,
                                                         alpha=2, prompt="hi"), Shown,
        "Latent 3 never fired", "pick a latent that fires"),
    row("playground-max_new_tokens-word", lambda e: shown(e.playground.status, e.playground.generate, latent=0,
                                                          max_new_tokens="many"), Shown, "'many'",
        "must be a whole number"),
    row("polysemy-pair-missing", lambda e: shown(e.polysemy.status_bar, e.polysemy.select, 5), Shown,
        "no pair 5", "pick one of 0 to 1"),
    row("polysemy-multi-token", lambda e: shown(e.polysemy.status_bar, e.polysemy.compare, "a cat", "the cat",
                                                "cat"), Shown, "'cat' is 3 tokens", "Pick a word that is a single"),
    row("pooling-text-blank", lambda e: shown(e.pooling.status_bar, setattr, e.pooling.text, "value", "   "), Shown,
        "The text is empty", "type a sentence"),
    row("binarization-threshold-negative", lambda e: shown(e.binarization.status_bar, e.binarization.set_threshold,
                                                           -1.0), Shown, "threshold=-1.0", "Use a threshold >= 0"),
    row("binarization-threshold-too-high", lambda e: shown(e.binarization.status_bar, e.binarization.set_threshold,
                                                           50.0), Shown, "threshold=50.0",
        "Use a threshold below the largest value"),
]

ROWS = MODELS_AND_TASKS + EXTRACT + ACTIVATION_CACHE + SAE_FILES + TRAIN + ZOO + PROBING + POLYSEMY + STEERING \
    + METRICS + WIDGETS


def test_rows_are_well_formed():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    assert all(len(r.needles) >= 2 for r in ROWS), "each row names the bad value and a hint"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gives_a_clear_error(env, row):
    with pytest.raises(Exception) as caught:
        row.call(env)
    error = caught.value
    assert isinstance(error, row.error), f"expected {row.error.__name__}, got {type(error).__name__}: {error}"
    message = str(error)
    missing = [needle for needle in row.needles if needle not in message]
    assert not missing, f"the message lacks {missing}: {message}"
