import pytest
import torch

import saelab
from saelab import activations
from saelab.activation_cache import ShardedTokens
from saelab.activations import extract, last_occurrence, load_activations

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["the bank of the river", "hi", "a somewhat longer text about money in the bank", "bank"]


def reference_tokens(model, text, hook, include_bos=False):
    """Direct computation: one text alone (no padding), the full model, TransformerLens' own cache."""
    tokens = model.tokenizer([text], return_tensors="pt")
    _, cache = model.run_with_cache(tokens.input_ids, names_filter=[hook])
    rows = cache[hook][0]
    return rows if include_bos else rows[1:]


@pytest.mark.parametrize("pooling", ["mean", "max", "sum", "last"])
def test_pooling_matches_direct_computation(tiny, pooling):
    acts = extract(tiny, TEXTS, HOOK, pooling, batch_size=3, progress=False)
    for i, text in enumerate(TEXTS):
        rows = reference_tokens(tiny, text, HOOK)
        expected = {"mean": rows.mean(0), "max": rows.max(0).values, "sum": rows.sum(0), "last": rows[-1]}[pooling]
        torch.testing.assert_close(acts.tensor[i], expected, atol=1e-4, rtol=1e-4)


def test_token_level_rows_skip_padding_and_bos(tiny):
    acts = extract(tiny, TEXTS, HOOK, "none", batch_size=4, progress=False)
    assert acts.lengths.tolist() == [len(t.encode()) for t in TEXTS]  # byte tokenizer: one token per byte, no BOS
    assert acts.tensor.shape == (sum(acts.lengths), tiny.cfg.d_model)
    bos = tiny.tokenizer.bos_token_id
    assert bos not in acts.token_ids.tolist() and tiny.tokenizer.pad_token_id not in acts.token_ids.tolist()
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(acts.text_rows(i), reference_tokens(tiny, text, HOOK), atol=1e-4, rtol=1e-4)


def test_include_bos_adds_the_bos_row(tiny):
    with_bos = extract(tiny, TEXTS[:2], HOOK, "none", include_bos=True, progress=False)
    assert with_bos.lengths.tolist() == [len(t.encode()) + 1 for t in TEXTS[:2]]
    assert with_bos.token_ids[0].item() == tiny.tokenizer.bos_token_id
    torch.testing.assert_close(with_bos.text_rows(0), reference_tokens(tiny, TEXTS[0], HOOK, include_bos=True),
                               atol=1e-4, rtol=1e-4)


def test_several_hooks_in_one_pass_and_stop_at_layer(tiny, monkeypatch):
    seen = []
    original = tiny.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["stop_at_layer"])
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny, "forward", spy)
    acts = extract(tiny, TEXTS, ["blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"], "mean", progress=False)
    assert set(acts.acts) == {"blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"}
    assert seen and all(stop == 1 for stop in seen)  # block 1 never runs
    seen.clear()
    resid_pre = extract(tiny, TEXTS, "blocks.1.hook_resid_pre", "mean", progress=False)
    assert seen and all(stop == 1 for stop in seen)  # block 1's input is read before block 1 runs
    resid_post_0 = extract(tiny, TEXTS, "blocks.0.hook_resid_post", "mean", progress=False).tensor
    torch.testing.assert_close(resid_pre.tensor, resid_post_0)  # the same point of the residual stream
    assert activations.stop_at_layer(tiny, ["ln_final.hook_normalized"]) is None  # after the blocks: full model


def test_last_block_hook_skips_the_unembedding(tiny):
    calls = []
    handle = tiny.original_model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        acts = extract(tiny, TEXTS, "blocks.1.hook_resid_post", "mean", progress=False)
        assert not calls and acts.tensor.shape == (len(TEXTS), tiny.cfg.d_model)
        tiny(tiny.to_tokens("check that the spy sees a full forward pass"))
        assert calls
    finally:
        handle.remove()


def test_last_occurrence_selects_the_target_word(tiny):
    texts = ["The bank of the river. The bank means", "money in the bank means"]
    acts = extract(tiny, texts, HOOK, "none", positions=last_occurrence("bank"), progress=False)
    assert acts.lengths.tolist() == [1, 1]
    # byte tokenizer: the last token of the last "bank" is its final "k"
    assert tiny.tokenizer.decode(acts.token_ids).replace(" ", "") == "kk"
    rows = reference_tokens(tiny, texts[0], HOOK, include_bos=True)
    k_position = texts[0].rindex("bank") + 4  # +1 for BOS, +3 to reach "k"
    torch.testing.assert_close(acts.text_rows(0)[0], rows[k_position], atol=1e-4, rtol=1e-4)


def test_per_text_words_and_missing_words(tiny):
    texts = ["a cat sat", "a dog ran"]
    acts = extract(tiny, texts, HOOK, "mean", positions=last_occurrence(["cat", "dog"]), progress=False)
    assert acts.lengths.tolist() == [1, 1]
    with pytest.raises(ValueError, match="found no position in text 1"):
        extract(tiny, texts, HOOK, "mean", positions=last_occurrence("cat"), progress=False)
    gaps = extract(tiny, texts, HOOK, "mean", positions=last_occurrence("cat"), allow_missing=True, progress=False)
    assert gaps.meta["missing"] == [1] and torch.isnan(gaps.tensor[1]).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hook": "blocks.9.hook_resid_post"}, r"Unknown hook 'blocks.9.hook_resid_post'. The model has 2 blocks"),
        ({"hook": "blocks.0.hook_resid_psot"}, r"Close valid names: \['blocks.0.hook_resid_post'"),
        ({"pooling": "median"}, "Unknown pooling 'median'"),
        ({"texts": []}, "`texts` is empty"),
        ({"texts": "one string"}, "not a single string"),
        ({"texts": ["ok", ""]}, "index 1"),
        ({"batch_size": 0}, "positive"),
    ],
)
def test_bad_input_gives_clear_errors(tiny, kwargs, message):
    args = {"texts": TEXTS, "hook": HOOK, "pooling": "mean", **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        extract(tiny, args.pop("texts"), args.pop("hook"), args.pop("pooling"), progress=False, **args)


def test_truncation_is_counted(tiny):
    acts = extract(tiny, ["x" * 50, "short"], HOOK, "none", max_length=10, progress=False)
    assert acts.meta["n_truncated"] == 1 and acts.lengths.tolist() == [9, 5]


def test_cache_round_trip_and_reuse(tiny, tmp_path, monkeypatch):
    first = extract(tiny, TEXTS, HOOK, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    uncached = extract(tiny, TEXTS, HOOK, "none", progress=False)
    torch.testing.assert_close(first.tensor, uncached.tensor)
    calls = []
    monkeypatch.setattr(activations._Extractor, "run", lambda *a: calls.append(a) or pytest.fail("recomputed"))
    second = extract(tiny, TEXTS, HOOK, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    assert not calls
    torch.testing.assert_close(first.tensor, second.tensor)
    assert torch.equal(first.lengths, second.lengths) and torch.equal(first.token_ids, second.token_ids)
    meta = load_activations(tmp_path / "c").meta
    for key in ("model", "model_fingerprint", "hooks", "pooling", "dataset_fingerprint", "saelab_version"):
        assert meta[key], key


def test_cache_keyed_by_inputs(tiny, tmp_path):
    extract(tiny, TEXTS, HOOK, "mean", cache=tmp_path / "c", progress=False)
    with pytest.warns(UserWarning, match="different inputs"):
        other = extract(tiny, TEXTS[:2], HOOK, "mean", cache=tmp_path / "c", progress=False)
    assert other.tensor.shape[0] == 2


def test_default_cache_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    acts = extract(tiny, TEXTS, HOOK, "mean", cache=True, progress=False)
    assert acts.folder.parent == tmp_path / "activations"


def test_corrupt_shard_is_detected_and_rebuilt(tiny, tmp_path):
    first = extract(tiny, TEXTS, HOOK, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    shard = tmp_path / "c" / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-7] + b"garbage")
    with pytest.raises(ValueError, match="shard_00001"):
        load_activations(tmp_path / "c")
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = extract(tiny, TEXTS, HOOK, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    torch.testing.assert_close(first.tensor, rebuilt.tensor)
    load_activations(tmp_path / "c")  # verifies cleanly now


def test_interrupted_extraction_resumes(tiny, tmp_path, monkeypatch):
    texts = [f"text number {i}" for i in range(10)]
    reference = extract(tiny, texts, HOOK, "mean", progress=False)
    original = activations._Extractor.run
    calls = []

    def crash_on_third(self, shard_texts, first_index):
        calls.append(first_index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, shard_texts, first_index)

    monkeypatch.setattr(activations._Extractor, "run", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny, texts, HOOK, "mean", cache=tmp_path / "c", shard_size=3, progress=False)
    with pytest.raises(ValueError, match="incomplete"):
        load_activations(tmp_path / "c")
    calls.clear()
    monkeypatch.setattr(activations._Extractor, "run", lambda self, t, i: calls.append(i) or original(self, t, i))
    resumed = extract(tiny, texts, HOOK, "mean", cache=tmp_path / "c", shard_size=3, progress=False)
    assert calls == [6, 9]  # shards 0 and 1 were kept; only 2 and 3 ran
    torch.testing.assert_close(resumed.tensor, reference.tensor)


def test_sharded_tokens_stream_one_shard_at_a_time(tiny, tmp_path):
    acts = extract(tiny, TEXTS, HOOK, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    source = ShardedTokens(tmp_path / "c", HOOK)
    assert len(source) == 2 and source.d_in == tiny.cfg.d_model
    torch.testing.assert_close(torch.cat(list(source)), acts.tensor)


def test_top_level_exports():
    assert saelab.extract is extract and saelab.last_occurrence is last_occurrence


@pytest.mark.parametrize("pooling", ["mean", "max", "sum", "last"])
def test_pooling_a_token_level_extraction_equals_pooled_extraction(tiny, pooling):
    tokens = extract(tiny, TEXTS, HOOK, "none", progress=False)
    pooled = extract(tiny, TEXTS, HOOK, pooling, progress=False)
    torch.testing.assert_close(tokens.pool(pooling).tensor, pooled.tensor, atol=1e-5, rtol=1e-5)


def test_pool_hand_computed_example():
    """Three texts of 2, 1 and 0 kept tokens: the empty one is NaN, never a silent zero."""
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0], [5.0, 6.0]])
    acts = saelab.Activations(["h"], "none", {"h": x}, torch.tensor([2, 1, 0]), torch.tensor([7, 8, 9]))
    assert acts.pool("mean")["h"][:2].tolist() == [[2.0, 1.0], [5.0, 6.0]]
    assert acts.pool("max")["h"][:2].tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert acts.pool("sum")["h"][:2].tolist() == [[4.0, 2.0], [5.0, 6.0]]
    assert acts.pool("last")["h"][:2].tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert torch.isnan(acts.pool("mean")["h"][2]).all()
    with pytest.raises(ValueError, match="already 'mean'-pooled"):
        acts.pool("mean").pool("max")


def test_extract_to_cache_writes_what_extract_reads_and_half_precision_storage(tiny, tmp_path):
    from saelab.activations import extract_to_cache

    texts = ["The cat sat on the mat.", "Dogs bark at night!", "Sparse autoencoders find features."]
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    folder = extract_to_cache(tiny, texts, hooks, cache=tmp_path / "f", shard_size=2, progress=False)
    full = extract(tiny, texts, hooks, "none", cache=tmp_path / "f", shard_size=2, progress=False)
    assert full.folder == folder  # the same cache: neither call repeats the other's work
    stream = ShardedTokens(folder, hooks[1])
    assert torch.equal(torch.cat([stream.chunk(i) for i in range(len(stream))]), full.acts[hooks[1]])
    half = extract(tiny, texts, hooks, "none", cache=tmp_path / "half", storage_dtype="float16", progress=False)
    assert half.acts[hooks[1]].dtype == torch.float16 and half.meta["storage_dtype"] == "float16"
    torch.testing.assert_close(half.acts[hooks[1]].float(), full.acts[hooks[1]], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="storage_dtype"):
        extract(tiny, texts, hooks, "none", storage_dtype="int8", progress=False)
    with pytest.raises(ValueError, match="needs cache"):
        extract_to_cache(tiny, texts, hooks, cache=None)
