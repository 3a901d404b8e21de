"""The zoo's training corpus: which texts, how they are extracted (once, at every catalog hook, by
`corpus_model`), and what identifies them in each SAE's key; and the held-out texts that score every zoo SAE."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from saelab.activations import extract_to_cache
from saelab.config import smoke_mode
from saelab.hf_twin import fast_dtype
from saelab.io import sha256_text
from saelab.models import model_fingerprint
from saelab.tasks import load_task
from saelab.zoo_catalog import catalog_hooks

CORPUS_NAME = "tweet-sentiment+wordnet-topics"
CORPUS_TWEETS_SMOKE, CORPUS_TOPICS_SMOKE = 500, 200
STORAGE_DTYPE = "float16"  # halves disk and I/O (bench/storage.py)
EXTRACT_BATCH = 128  # texts per forward pass: short texts, so 4x the default halves the extraction time on CPU
HELDOUT = {"tweets": 600, "topics": 200, "ce_texts": 16}
HELDOUT_SMOKE = {"tweets": 60, "topics": 20, "ce_texts": 2}


def training_texts(smoke: bool | None = None) -> list[str]:
    """The offline SAE training corpus: every training-split text of `tweet-sentiment` (cleaned on load) and of
    `wordnet-topics` (30,935 texts, about 0.88M tokens), shuffled with seed 0; in smoke mode 500
    tweets and 200 topic sentences. Test-split texts are never in it: `heldout_texts` draws from them."""
    return list(_training_texts(smoke_mode() if smoke is None else smoke))


@lru_cache(maxsize=2)
def _training_texts(smoke: bool) -> tuple[str, ...]:
    # kept per process: `get_saes` asks for the corpus to key its SAEs and again to extract it (1 s each time)
    tweets = load_task("tweet-sentiment", n=CORPUS_TWEETS_SMOKE if smoke else None)
    topics = load_task("wordnet-topics", n=CORPUS_TOPICS_SMOKE if smoke else None)
    texts = tweets.train.texts + topics.train.texts
    random.Random(0).shuffle(texts)
    return tuple(texts)


def heldout_texts(smoke: bool | None = None) -> list[str]:
    """Test-split texts for the quality scores (600 tweets and 200 topic sentences; 60 and 20 in smoke mode)."""
    sizes = HELDOUT_SMOKE if (smoke_mode() if smoke is None else smoke) else HELDOUT
    return (load_task("tweet-sentiment").test.texts[:sizes["tweets"]]
            + load_task("wordnet-topics").test.texts[:sizes["topics"]])


def corpus_folder(model, smoke: bool | None = None, progress: bool = True) -> Path:
    """The shared corpus's token activations at every hook of the catalog (`zoo_catalog.catalog_hooks`), in
    float16: extracted once (`make zoo` does it; an interrupted extraction resumes) by `corpus_model(model)`, then
    read shard by shard with ``ShardedTokens(corpus_folder(model), hook)``."""
    return extract_to_cache(corpus_model(model), training_texts(smoke), catalog_hooks(model), dataset=CORPUS_NAME,
                            storage_dtype=STORAGE_DTYPE, batch_size=EXTRACT_BATCH, progress=progress)


def training_tokens(model, texts: Sequence[str] | None, corpus_name: str | None, needed: set[str], smoke: bool,
                    progress: bool) -> tuple[Path, list[str]]:
    """(folder, hooks): the token activations SAEs at the hooks `needed` train on. The shared corpus at every
    catalog hook when `texts` is None and the catalog has those hooks (one extraction serves every notebook), else
    `texts` (None: the zoo's corpus) at `needed` alone."""
    if texts is None and needed <= set(catalog_hooks(model)):
        return corpus_folder(model, smoke, progress), catalog_hooks(model)
    hooks = sorted(needed)
    texts = training_texts(smoke) if texts is None else texts
    folder = extract_to_cache(corpus_model(model), texts, hooks, dataset=corpus_name or CORPUS_NAME,
                              storage_dtype=STORAGE_DTYPE, batch_size=EXTRACT_BATCH, progress=progress)
    return folder, hooks


def corpus_forward_dtype(model) -> str:
    """The dtype the training corpus is extracted in: `hf_twin.fast_dtype` ("bfloat16" for a float32 `model` on a
    GPU or on a CPU that multiplies bfloat16 fast: 2.1x float32 on 768 corpus texts here, docs/design.md), else the
    model's own. The held-out activations that score and gate each SAE come from `model` itself, as the notebooks
    read it."""
    return fast_dtype(model) or str(next(model.parameters()).dtype).removeprefix("torch.")


def corpus_model(model):
    """The model that extracts the training corpus: `model`, or a bfloat16 copy of it (`corpus_forward_dtype`),
    fingerprinted as such, so its activation cache is never mistaken for the float32 model's."""
    if corpus_forward_dtype(model) != "bfloat16" or next(model.parameters()).dtype == torch.bfloat16:
        return model
    half = copy.deepcopy(model).to(torch.bfloat16)
    half.saelab_fingerprint = model_fingerprint(model) + "@bfloat16"
    return half


def corpus_record(texts: Sequence[str], name: str, forward_dtype: str = "float32") -> dict[str, Any]:
    """What identifies the training corpus in an SAE's key; the forward dtype only when not float32 (so keys made
    by a float32 extraction stay as they were)."""
    record = {"name": name, "fingerprint": sha256_text(*texts)[:16], "n_texts": len(texts), "storage": STORAGE_DTYPE}
    return record | ({"forward": forward_dtype} if forward_dtype != "float32" else {})


def resolve_corpus(model, texts: Sequence[str] | None, corpus_name: str | None,
                   smoke: bool) -> tuple[list[str], dict[str, Any]]:
    """The training texts (the zoo's own corpus when `texts` is None) and their record for the SAE's key."""
    if texts is None:
        texts, corpus_name = training_texts(smoke), CORPUS_NAME
    elif not corpus_name:
        raise ValueError("pass corpus_name= to name your own training texts (it is recorded with each SAE)")
    return list(texts), corpus_record(texts, corpus_name, corpus_forward_dtype(model))


def heldout_folder(model, hooks: Sequence[str], smoke: bool, progress: bool = False) -> Path:
    """The activation cache of the held-out texts at `hooks` (extracted on first use, then reused)."""
    return extract_to_cache(model, heldout_texts(smoke), list(hooks), dataset="zoo held-out",
                            storage_dtype=STORAGE_DTYPE, batch_size=EXTRACT_BATCH, progress=progress)


__all__ = ["CORPUS_NAME", "CORPUS_TOPICS_SMOKE", "CORPUS_TWEETS_SMOKE", "EXTRACT_BATCH", "HELDOUT", "HELDOUT_SMOKE",
           "STORAGE_DTYPE", "corpus_folder", "corpus_forward_dtype", "corpus_model", "corpus_record",
           "heldout_folder", "heldout_texts", "resolve_corpus", "training_texts", "training_tokens"]
