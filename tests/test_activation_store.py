"""The Hugging Face `datasets` activation store (saelab.activation_store), on one process.

Its several-process side (torchrun, two ranks) is in test_distributed.py.
"""

import pytest
import torch

from saelab.activation_cache import MANIFEST, ShardedTokens, read_manifest
from saelab.activation_store import StoreTokens, extract_store, load_store, open_store
from saelab.activations import extract_to_cache, load_activations
from saelab.io import read_json, sha256_file
from saelab.sae import SAEConfig
from saelab.train import TrainConfig, train_sae

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
TEXTS = [f"Text {i}: " + "the cat sat on the mat. " * (i % 4 + 1) for i in range(30)]


@pytest.fixture(scope="module")
def stores(tiny, tmp_path_factory):
    """The same extraction as a safetensors cache and as an HF store, 5 shards of 7 texts (the last of 2)."""
    root = tmp_path_factory.mktemp("stores")
    cache = extract_to_cache(tiny, TEXTS, HOOKS, cache=root / "cache", shard_size=7, progress=False)
    store = extract_store(tiny, TEXTS, HOOKS, root / "store", shard_size=7, progress=False)
    return cache, store


def test_store_loads_back_the_same_tensors_as_the_cache(stores):
    cache, store = stores
    a, b = load_activations(cache), load_store(store)
    for hook in HOOKS:
        assert torch.equal(a.acts[hook], b.acts[hook])
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.token_ids, b.token_ids)
    assert a.lengths.tolist() == b.lengths.tolist() and int(b.lengths.sum()) == len(b.acts[HOOKS[0]])
    assert {k: v for k, v in a.meta.items() if k != "cache_key"} == \
        {k: v for k, v in b.meta.items() if k not in ("cache_key", "format")}
    dataset = open_store(store).with_format("torch")
    assert dataset.num_rows == len(a.token_ids)
    assert torch.equal(dataset[5:9][HOOKS[1]], a.acts[HOOKS[1]][5:9])


def test_store_manifest_has_the_cache_guarantees(stores, tiny):
    _, store = stores
    manifest = read_manifest(store)  # the cache's own layout check
    meta = manifest["meta"]
    assert manifest["complete"] and len(manifest["shards"]) == 5
    assert meta["model_fingerprint"] == tiny.saelab_fingerprint and meta["hooks"] == HOOKS
    assert meta["dataset_fingerprint"] and meta["format"] == "hf-datasets"
    for entry in manifest["shards"].values():
        assert sha256_file(store / entry["file"]) == entry["sha256"]
    assert not list(store.glob("shard_*.json")), "per-shard records go once the manifest is complete"


def test_store_streams_into_train_sae_like_the_cache(stores, one_thread):
    cache, store = stores
    cfg = SAEConfig(d_in=64, d_sae=96, architecture="topk", k=8)
    tcfg = TrainConfig(n_steps=15, batch_size=64, window_chunks=2)
    source = StoreTokens(store, HOOKS[1])
    assert (len(source), source.d_in, source.n_tokens) == (5, 64, len(load_store(store).token_ids))
    from_cache = train_sae(ShardedTokens(cache, HOOKS[1]), cfg, tcfg, progress=False)
    from_store = train_sae(source, cfg, tcfg, progress=False)
    for name, tensor in from_cache.state_dict().items():
        assert torch.equal(tensor, from_store.state_dict()[name]), name
    assert from_store.cfg.hook_name == HOOKS[1] and from_store.cfg.model_name == source.model_name
    assert from_store.cfg.dataset["format"] == "hf-datasets"


def test_interrupted_extraction_resumes_and_corrupt_shards_are_redone(tiny, tmp_path, monkeypatch):
    from saelab.activations import _Extractor

    real_run, calls = _Extractor.run, []

    def run(self, texts, first_index):
        calls.append(first_index)
        if len(calls) == 3 and fail[0]:
            raise KeyboardInterrupt  # killed during the third shard
        return real_run(self, texts, first_index)

    fail = [True]
    monkeypatch.setattr(_Extractor, "run", run)
    folder = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        extract_store(tiny, TEXTS, HOOKS, folder, shard_size=7, progress=False)
    assert sorted(p.name for p in folder.glob("shard_*.json")) == ["shard_00000.json", "shard_00001.json"]
    fail[0], calls[:] = False, []
    extract_store(tiny, TEXTS, HOOKS, folder, shard_size=7, progress=False)
    assert calls == [14, 21, 28], "only the shards not yet written are extracted"

    manifest = read_json(folder / MANIFEST)
    with open(folder / manifest["shards"]["1"]["file"], "ab") as handle:
        handle.write(b"damage")
    calls[:] = []
    with pytest.raises(ValueError, match="corrupt or missing shard"):
        load_store(folder)
    extract_store(tiny, TEXTS, HOOKS, folder, shard_size=7, progress=False)
    assert calls == [7]
    reference = extract_store(tiny, TEXTS, HOOKS, tmp_path / "reference", shard_size=7, progress=False)
    assert torch.equal(load_store(folder).acts[HOOKS[0]], load_store(reference).acts[HOOKS[0]])


def test_other_inputs_rebuild_the_folder(tiny, tmp_path):
    folder = extract_store(tiny, TEXTS, HOOKS[:1], tmp_path / "store", shard_size=7, progress=False)
    with pytest.warns(UserWarning, match="different inputs"):
        extract_store(tiny, TEXTS[:10], HOOKS[:1], folder, shard_size=7, progress=False)
    assert len(read_manifest(folder)["shards"]) == 2 and len(load_store(folder).lengths) == 10
    assert len(list(folder.glob("shard_*"))) == 2


def test_safetensors_format_writes_the_cache_and_bfloat16_round_trips(tiny, tmp_path):
    folder = extract_store(tiny, TEXTS, HOOKS[1], tmp_path / "st", fmt="safetensors", shard_size=7, progress=False)
    cache = extract_to_cache(tiny, TEXTS, HOOKS[1], cache=tmp_path / "cache", shard_size=7, progress=False)
    assert read_manifest(folder)["meta"]["cache_key"] == read_manifest(cache)["meta"]["cache_key"]
    assert torch.equal(load_activations(folder).acts[HOOKS[1]], load_activations(cache).acts[HOOKS[1]])
    half = extract_store(tiny, TEXTS, HOOKS[1], tmp_path / "bf16", shard_size=7, storage_dtype="bfloat16",
                         progress=False)
    loaded = load_store(half).acts[HOOKS[1]]
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded, load_activations(cache).acts[HOOKS[1]].to(torch.bfloat16))
    assert StoreTokens(half, HOOKS[1]).chunk(0).dtype == torch.bfloat16


def test_clear_errors(stores, tiny, tmp_path):
    cache, store = stores
    with pytest.raises(ValueError, match="not in the activation store"):
        StoreTokens(store, "blocks.0.hook_mlp_out")
    with pytest.raises(ValueError, match="not a Hugging Face activation store"):
        load_store(cache)
    with pytest.raises(ValueError, match="format='parquet'"):
        extract_store(tiny, TEXTS, HOOKS, tmp_path / "x", fmt="parquet")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        extract_store(tiny, TEXTS, HOOKS, tmp_path / "file", progress=False)
