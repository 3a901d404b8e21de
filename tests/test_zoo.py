"""saelab.zoo: SAEs are trained once, reused only when their recorded key matches, retrained when it does not."""

import json

import pytest
import torch

from saelab import zoo

TEXTS = [f"sentence number {i} about cats and dogs and the weather" for i in range(40)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def small_spec(**fields):
    base = dict(hook="blocks.0.hook_resid_post", d_sae=64, k=4, n_tokens=512, batch_size=128)
    return zoo.SAESpec(**{**base, **fields})


def get(tiny, specs):
    return zoo.get_saes(tiny, specs, texts=TEXTS, corpus_name="test-corpus", smoke=False, progress=False)


def test_trains_once_then_loads(tiny, cache, one_thread, monkeypatch):
    specs = [small_spec(), small_spec(hook="blocks.1.hook_resid_post", architecture="relu", d_sae=32)]
    first = get(tiny, specs)
    assert list(first) == specs
    assert first[specs[1]].architecture == "relu" and first[specs[1]].cfg.k is None
    assert first[specs[0]].cfg.hook_name == "blocks.0.hook_resid_post"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached SAE was retrained")

    monkeypatch.setattr(zoo, "train_sae", no_training)
    again = get(tiny, specs)
    for spec in specs:
        torch.testing.assert_close(again[spec].W_dec, first[spec].W_dec)


def test_changed_recipe_or_corrupt_folder_retrains(tiny, cache, one_thread):
    spec = small_spec()
    sae = get(tiny, [spec])[spec]
    changed = small_spec(lr=1e-3)
    assert zoo.spec_key(tiny, changed, {"x": 1}) != zoo.spec_key(tiny, spec, {"x": 1})
    other = get(tiny, [changed])[changed]
    assert not torch.equal(other.W_dec, sae.W_dec)

    folders = sorted((cache / "saes" / "zoo").iterdir())
    assert len(folders) == 2
    target = next(f for f in folders if json.loads((f / "cfg.json").read_text())["metadata"]["zoo_spec"]["lr"] == 2e-3)
    (target / "sae_weights.safetensors").write_bytes(b"broken")
    rebuilt = get(tiny, [spec])[spec]
    torch.testing.assert_close(rebuilt.W_dec, sae.W_dec)  # same seed, same data: the same SAE again


def test_metadata_and_smoke_scaling(tiny, cache, one_thread):
    spec = small_spec(architecture="jumprelu", options={"jumprelu_init_threshold": 0.1})
    assert spec.options == (("jumprelu_init_threshold", 0.1),) and spec.k is None
    assert "jumprelu_init_threshold=0.1" in spec.label
    sae = get(tiny, [spec])[spec]
    meta = sae.cfg.metadata
    assert meta["zoo_spec"]["hook"] == spec.hook and len(meta["zoo_key"]) == 16
    assert sae.cfg.jumprelu_init_threshold == pytest.approx(0.1)
    smoke = small_spec(d_sae=4096, k=64).scaled_for_smoke()
    assert (smoke.d_sae, smoke.k, smoke.n_tokens) == (512, 64, 20 * 512)


def test_bad_input(tiny, cache):
    with pytest.raises(ValueError, match="at least one"):
        get(tiny, [])
    with pytest.raises(ValueError, match="twice"):
        get(tiny, [small_spec(), small_spec()])
    with pytest.raises(ValueError, match="corpus_name"):
        zoo.get_saes(tiny, [small_spec()], texts=TEXTS, progress=False)
