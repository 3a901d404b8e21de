"""Train-once SAEs for the research notebooks: describe an SAE, get it from the cache or train it.

Notebooks 03-06 sweep layers, components, widths and architectures. Each SAE they need is described by an
`SAESpec`; `get_saes(model, specs)` loads the ones already in saelab's cache and trains the rest with
`saelab.train_sae` on token activations of one shared offline corpus (`training_texts`). All missing hooks are
extracted in one forward pass over the corpus. A cached SAE is reused only when its recorded key (model weights,
hook, SAE and training config, corpus) matches the spec's, so a changed recipe never silently loads a stale SAE.

    specs = [zoo.SAESpec(f"blocks.{layer}.hook_resid_post") for layer in (3, 9, 15)]
    saes = zoo.get_saes(model, specs)           # {spec: SAE}, trained once, then loaded in seconds
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from saelab._version import __version__
from saelab.activation_cache import ShardedTokens
from saelab.activations import extract
from saelab.config import cache_dir, smoke_mode
from saelab.io import read_json, sha256_text
from saelab.models import model_fingerprint, model_name
from saelab.sae import SAE, SAEConfig
from saelab.tasks import load_task
from saelab.train import TrainConfig, train_sae

#: the shared training corpus: a stratified sample of tweets plus every WordNet-topics training sentence
CORPUS_TWEETS = 10_000
CORPUS_TWEETS_SMOKE = 500
CORPUS_NAME = "tweet-sentiment+wordnet-topics"


def training_texts(n_tweets: int | None = None) -> list[str]:
    """The offline SAE training corpus: the training splits of `tweet-sentiment` (a stratified sample of
    `n_tweets`, default 10,000; 500 in smoke mode) and `wordnet-topics`, shuffled with seed 0.

    Held-out (test-split) texts are never in it, so notebooks can evaluate on them. It is the corpus notebook 02
    trains on, so the token cache it wrote is reused.
    """
    if n_tweets is None:
        n_tweets = CORPUS_TWEETS_SMOKE if smoke_mode() else CORPUS_TWEETS
    tweets = load_task("tweet-sentiment", n=n_tweets)
    topics = load_task("wordnet-topics", n=200 if smoke_mode() else None)
    texts = tweets.train.texts + topics.train.texts
    random.Random(0).shuffle(texts)
    return texts


@dataclass(frozen=True)
class SAESpec:
    """One SAE to get: where it reads (`hook`), what it is, and how long it trains.

    `options` go to `SAEConfig` (e.g. ``{"l1_coefficient": 0.3}``) and `train_options` to `TrainConfig`
    (e.g. ``{"decay": "cosine"}``); both are stored as sorted tuples so a spec can be a dict key. The trainer cycles
    over the corpus when `n_tokens` exceeds it.
    """

    hook: str
    architecture: str = "topk"
    d_sae: int = 4096
    k: int | None = 32
    n_tokens: int = 200_000
    batch_size: int = 4096
    lr: float = 2e-3
    seed: int = 0
    normalize_activations: str = "expected_average_only_in"
    options: tuple[tuple[str, Any], ...] = ()
    train_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for name in ("options", "train_options"):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, tuple(sorted(value.items())))
        if self.architecture not in ("topk", "batchtopk"):
            object.__setattr__(self, "k", None)
        try:  # a bad k, architecture or option fails here, not after a long extraction
            self.sae_config(d_in=1)
            self.train_config()
        except (TypeError, ValueError) as err:
            raise ValueError(f"SAESpec for {self.hook!r}: {err}") from None

    @property
    def label(self) -> str:
        """A short readable name, e.g. ``topk k=32 d_sae=4096 @ blocks.6.hook_resid_post``."""
        extra = " ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                         for key, value in self.options)
        sparsity = f"k={self.k} " if self.k is not None else ""
        return f"{self.architecture} {sparsity}{extra + ' ' if extra else ''}d_sae={self.d_sae} @ {self.hook}"

    def sae_config(self, d_in: int) -> SAEConfig:
        return SAEConfig(d_in=d_in, d_sae=self.d_sae, architecture=self.architecture, k=self.k,
                         normalize_activations=self.normalize_activations, hook_name=self.hook,
                         **dict(self.options))

    def train_config(self) -> TrainConfig:
        return TrainConfig(n_tokens=self.n_tokens, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           log_every=10, **dict(self.train_options))

    def scaled_for_smoke(self) -> SAESpec:
        """The same SAE, shrunk for smoke runs: at most 512 latents and 20 steps of 512 tokens."""
        d_sae = min(self.d_sae, 512)
        k = None if self.k is None else min(self.k, d_sae)
        return dataclasses.replace(self, d_sae=d_sae, k=k, n_tokens=20 * 512, batch_size=512)


def spec_key(model, spec: SAESpec, corpus: dict[str, Any]) -> str:
    """What identifies a trained SAE: model weights, the spec, the corpus and the saelab version's trainer."""
    payload = {"model": model_fingerprint(model), "spec": dataclasses.asdict(spec), "corpus": corpus,
               "saelab_version": __version__}
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))[:16]


def sae_folder(model, spec: SAESpec, key: str) -> Path:
    """Where the SAE of `spec` lives in saelab's cache (readable name + key)."""
    name = f"{model_name(model)}-{spec.hook}-{spec.architecture}-{spec.d_sae}-{key}".replace("/", "_")
    return cache_dir("saes") / "zoo" / name


def _cached(folder: Path, key: str) -> SAE | None:
    """The SAE saved at `folder` if it is complete and was trained for `key`; None otherwise."""
    try:
        recorded = read_json(folder / "cfg.json").get("metadata", {}).get("zoo_key")
        return SAE.load(folder) if recorded == key else None
    except (OSError, ValueError, KeyError):
        return None


def get_saes(model, specs: Sequence[SAESpec], *, texts: Sequence[str] | None = None, corpus_name: str | None = None,
             smoke: bool | None = None, progress: bool = True) -> dict[SAESpec, SAE]:
    """Load each SAE of `specs` from the cache, training the missing ones; returns ``{spec: SAE}`` in order.

    texts: the training corpus (default `training_texts()`); pass `corpus_name` with your own texts.
    smoke: shrink every spec (`SAESpec.scaled_for_smoke`); defaults to `saelab.smoke_mode()`. The returned
        dict is keyed by the specs you passed either way.
    """
    example = "pass a list such as [saelab.SAESpec('blocks.6.hook_resid_post')]"
    try:
        specs = list(specs)
    except TypeError:
        raise TypeError(f"specs must be a list of SAESpec, not {specs!r}: {example}") from None
    if not specs:
        raise ValueError(f"get_saes needs at least one SAESpec: {example}")
    wrong = [s for s in specs if not isinstance(s, SAESpec)]
    if wrong:
        raise TypeError(f"specs must hold SAESpec objects, not {wrong[0]!r}: wrap it as saelab.SAESpec(...)")
    if len(set(specs)) != len(specs):
        raise ValueError("the same SAESpec appears twice in specs: give each SAESpec once")
    smoke = smoke_mode() if smoke is None else smoke
    if texts is None:
        texts, corpus_name = training_texts(), CORPUS_NAME
    elif not corpus_name:
        raise ValueError("pass corpus_name= to name your own training texts (it is recorded with each SAE)")
    texts = list(texts)
    corpus = {"name": corpus_name, "fingerprint": sha256_text(*texts)[:16], "n_texts": len(texts)}
    actual = {spec: spec.scaled_for_smoke() if smoke else spec for spec in specs}
    keys = {spec: spec_key(model, actual[spec], corpus) for spec in specs}
    result = {spec: _cached(sae_folder(model, actual[spec], keys[spec]), keys[spec]) for spec in specs}
    missing = [spec for spec in specs if result[spec] is None]
    if missing:
        hooks = sorted({spec.hook for spec in missing})
        tokens = extract(model, texts, hooks, pooling="none", cache=True, dataset=corpus_name, progress=progress)
        folder = tokens.folder
        del tokens  # the trainer streams from the shards on disk
        bar = tqdm(missing, desc="training SAEs", disable=not progress)
        for spec in bar:
            bar.set_postfix_str(spec.label)
            result[spec] = _train_one(model, actual[spec], keys[spec], folder)
    return result


def _train_one(model, spec: SAESpec, key: str, token_folder: Path) -> SAE:
    source = ShardedTokens(token_folder, spec.hook)
    sae = train_sae(source, spec.sae_config(source.d_in), spec.train_config(), progress=False)
    sae.cfg.metadata["zoo_key"] = key
    sae.cfg.metadata["zoo_spec"] = dataclasses.asdict(spec)
    folder = sae.save(sae_folder(model, spec, key))
    return SAE.load(folder)  # what later runs will load (BatchTopK comes back in its thresholded form)


def get_sae(model, hook: str, architecture: str = "topk", **spec_fields: Any) -> SAE:
    """One SAE: ``get_sae(model, "blocks.6.hook_resid_post", "topk", k=32, d_sae=4096)``; see `get_saes`."""
    progress = spec_fields.pop("progress", True)
    spec = SAESpec(hook=hook, architecture=architecture, **spec_fields)
    return get_saes(model, [spec], progress=progress)[spec]


__all__ = ["SAESpec", "get_sae", "get_saes", "training_texts", "spec_key", "sae_folder", "CORPUS_NAME"]
