"""`saelab.load_pretrained_sae` through SAELens' own release registry, offline.

Nothing is mocked but the download: each test writes a release's files into a Hugging Face cache of its own (the
layout `hf download` leaves: models--org--repo/refs/main + snapshots/<commit>/<folder>/...), points
huggingface_hub at it and switches the hub off. SAELens then resolves the release, reads the files from that cache
and converts them, exactly as after a real download. The registry entries are SAELens' real ones (gpt2-small-res-jb,
PS-Eval's release; gemma-scope-2b-pt-res-canonical, MOSAIC's and Delta Token Confidence's), plus one added release
for a tiny model, whose SAE the tiny model then runs."""

import json
import time
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import saelab
from saelab import pretrained, zoo
from saelab.metrics import core_metrics

sae_lens = pytest.importorskip("sae_lens")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ATOL = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with the hub unreachable (offline)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=3.0: False)
    return cache


def put(cache, repo_id, files: dict):
    """Write `files` ({path in repo: writer(path)}) as a cached snapshot of `repo_id` at `main`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, write in files.items():
        path = repo / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)


def json_file(obj):
    return lambda path: path.write_text(json.dumps(obj))


def tensors_file(tensors):
    return lambda path: save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def random_weights(d_in, d_sae, seed=0, **extra):
    g = torch.Generator().manual_seed(seed)
    out = {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.1, "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.1,
           "b_enc": torch.randn(d_sae, generator=g) * 0.1 - 0.05, "b_dec": torch.randn(d_in, generator=g) * 0.1}
    return out | extra


def saelens_reference(release, sae_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sae_lens.SAE.from_pretrained(release, sae_id, device="cpu")


def assert_same_maps(ours, theirs, d_in, scale=1.0):
    x = scale * torch.randn(64, d_in, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        z = ours.encode(x)
        assert (z != 0).any() and (z == 0).any()
        torch.testing.assert_close(z, theirs.encode(x), atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(ours.decode(z), theirs.decode(z), atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=1e-4)


def test_ps_evals_release_loads_from_the_cache_like_saelens(hf_cache):
    """gpt2-small-res-jb: SAELens' pre-6.0 cfg.json (hook_point, ...) + safetensors, a plain ReLU SAE."""
    release, sae_id = "gpt2-small-res-jb", "blocks.8.hook_resid_pre"
    lookup = pretrained.registry()[release]
    folder = lookup.saes_map[sae_id]
    cfg = {"d_in": 768, "d_sae": 40, "hook_point": sae_id, "hook_point_layer": 8, "model_name": "gpt2-small",
           "dtype": "torch.float32", "device": "cpu", "apply_b_dec_to_input": True, "context_size": 128,
           "dataset_path": "Skylion007/openwebtext", "normalize_activations": "none"}
    put(hf_cache, lookup.repo_id, {f"{folder}/cfg.json": json_file(cfg),
                                   f"{folder}/sae_weights.safetensors": tensors_file(random_weights(768, 40))})
    ours = saelab.load_pretrained_sae(release, sae_id)
    assert ours.architecture == "relu" and ours.cfg.hook_name == sae_id and ours.cfg.d_sae == 40
    assert ours.cfg.metadata["pretrained"]["repo_id"] == lookup.repo_id
    assert_same_maps(ours, saelens_reference(release, sae_id), 768)


def test_gemma_scopes_jumprelu_release_loads_like_saelens(hf_cache, monkeypatch):
    """gemma-scope-2b-pt-res-canonical: Gemma Scope's params.npz, converted by SAELens' gemma_2 loader. SAELens
    reads the width from the folder name (16k); the test shrinks it to 48 latents to keep the file small."""
    from sae_lens.loading import pretrained_sae_loaders as loaders

    release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"
    lookup = pretrained.registry()[release]
    original = loaders.get_gemma_2_config_from_hf
    monkeypatch.setattr(loaders, "get_gemma_2_config_from_hf", lambda *a, **k: original(*a, **k) | {"d_sae": 48})
    weights = {k.lower() if k.startswith("W_") else k: v.numpy()
               for k, v in random_weights(2304, 48, threshold=torch.full((48,), 0.05)).items()}
    put(hf_cache, lookup.repo_id, {f"{lookup.saes_map[sae_id]}/params.npz": lambda p: np.savez(p, **weights)})
    ours = saelab.load_pretrained_sae(release, sae_id)
    assert ours.architecture == "jumprelu" and ours.cfg.hook_name == "blocks.12.hook_resid_post"
    assert_same_maps(ours, saelens_reference(release, sae_id), 2304)


@pytest.fixture
def tiny_release(hf_cache, monkeypatch):
    """A release for the tiny Gemma 3 model, registered in SAELens' registry, with a TopK SAE in SAELens v6 format
    (decoder rows not unit norm, rescaled by their norms: saelab folds the norms in)."""
    from sae_lens.loading.pretrained_saes_directory import PretrainedSAELookup

    lookup = PretrainedSAELookup(
        release="tiny-test-res", repo_id="saelab-test/tiny-saes", model="tiny-gemma3", conversion_func=None,
        saes_map={"blocks.1.hook_resid_post": "blocks.1"}, expected_var_explained={}, expected_l0={},
        neuronpedia_id={}, norm_scaling_factor={}, config_overrides=None)
    monkeypatch.setitem(pretrained.registry(), "tiny-test-res", lookup)
    cfg = {"architecture": "topk", "d_in": 64, "d_sae": 96, "k": 6, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "rescale_acts_by_decoder_norm": True,
           "metadata": {"sae_lens_version": "6.0.0", "hook_name": "blocks.1.hook_resid_post",
                        "model_name": "tiny-gemma3"}}
    weights = random_weights(64, 96, seed=2)
    weights["W_dec"] = weights["W_dec"] * torch.linspace(0.5, 3.0, 96)[:, None]
    put(hf_cache, lookup.repo_id, {"blocks.1/cfg.json": json_file(cfg),
                                   "blocks.1/sae_weights.safetensors": tensors_file(weights)})
    return "tiny-test-res", "blocks.1.hook_resid_post"


def test_a_registered_topk_release_runs_on_its_model(tiny_release, tiny):
    half = saelab.load_pretrained_sae(*tiny_release, dtype="bfloat16")
    assert half.W_enc.dtype == torch.bfloat16 and half.cfg.dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype='fp8'"):
        saelab.load_pretrained_sae(*tiny_release, dtype="fp8")
    ours = saelab.load_pretrained_sae(*tiny_release, model=tiny)
    assert ours.architecture == "topk" and ours.cfg.k == 6
    assert_same_maps(ours, saelens_reference(*tiny_release), 64, scale=3.0)
    acts = saelab.extract(tiny, ["the cat sat on the mat", "hello"], ours.cfg.hook_name, pooling="none",
                          cache=False, progress=False)
    metrics = core_metrics(ours, acts.tensor, progress=False)
    assert metrics["l0"] == pytest.approx(6.0)


def test_load_pretrained_saes_scores_them_for_the_quality_gates(tiny_release, tiny):
    saes = pretrained.load_pretrained_saes({"tiny": tiny_release}, model=tiny, score=True, progress=False)
    quality = saes["tiny"].cfg.metadata["zoo_quality"]
    assert set(quality) >= {"explained_variance", "l0", "frac_alive", "ce_loss_score"}
    passes, why = zoo.gate(saes["tiny"])
    assert not passes and "below quality gate" in why  # a random SAE does not reconstruct
    rows = pretrained.quality_rows(saes)
    assert rows[0]["source"] == "tiny-test-res/blocks.1.hook_resid_post" and rows[0]["l0"] == pytest.approx(6.0)


def test_an_sae_for_another_model_is_refused_with_both_widths(hf_cache, tiny):
    release, sae_id = "gpt2-small-res-jb", "blocks.1.hook_resid_pre"
    lookup = pretrained.registry()[release]
    folder = lookup.saes_map[sae_id]
    cfg = {"d_in": 768, "d_sae": 8, "hook_point": sae_id, "model_name": "gpt2-small", "dtype": "torch.float32",
           "device": "cpu"}
    put(hf_cache, lookup.repo_id, {f"{folder}/cfg.json": json_file(cfg),
                                   f"{folder}/sae_weights.safetensors": tensors_file(random_weights(768, 8))})
    with pytest.raises(ValueError, match=r"(?s)gpt2-small \(width 768\).*d_model=64"):
        saelab.load_pretrained_sae(release, sae_id, model=tiny)


def test_offline_and_not_cached_fails_at_once_saying_what_to_do(hf_cache):
    started = time.perf_counter()
    expected = r"(?s)layer_5/width_16k/canonical.*not in the local Hugging Face cache.*hf download google/gemma-scope"
    with pytest.raises(saelab.ModelNotAvailableError, match=expected) as info:
        saelab.load_pretrained_sae("gemma-scope-2b-pt-res-canonical", "layer_5/width_16k/canonical")
    assert isinstance(info.value, pretrained.PretrainedSAENotAvailableError)
    assert time.perf_counter() - started < 2.0


def test_unknown_names_get_the_closest_ones():
    with pytest.raises(ValueError, match=r"(?i)did you mean 'gpt2-small-res-jb'"):
        saelab.load_pretrained_sae("gpt2-small-res-j", "blocks.8.hook_resid_pre")
    with pytest.raises(ValueError, match=r"did you mean 'layer_12/width_16k/canonical'"):
        saelab.load_pretrained_sae("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonicl")
    with pytest.raises(TypeError, match="non-empty string"):
        saelab.load_pretrained_sae("", "x")
    assert "gemma-scope-2b-pt-res-canonical" in pretrained.releases("gemma-2-2b")


def test_pretrained_specs_load_check_and_tabulate(tiny_release, tiny):
    spec = pretrained.PretrainedSpec(*tiny_release, hook="blocks.1.hook_resid_post", architecture="topk", d_sae=96,
                                     k=6)
    saes = pretrained.get_saes(tiny, {"tiny": spec}, progress=False)
    assert saes["tiny"].cfg.metadata["zoo_quality"]["l0"] == pytest.approx(6.0)
    frame = pretrained.table(tiny, {"tiny": spec}, saes)
    assert frame.loc["tiny", "train tokens"] == "pretrained" and frame.loc["tiny", "l0"] == pytest.approx(6.0)
    assert spec.label == "topk k=6 d_sae=96 @ blocks.1.hook_resid_post (tiny-test-res)"
    wrong = pretrained.PretrainedSpec(*tiny_release, hook="blocks.1.hook_resid_post", architecture="relu", d_sae=96)
    with pytest.raises(ValueError, match=r"(?s)'architecture': 'topk'.*fix the spec"):
        pretrained.get_saes(tiny, [wrong], score=False)
    with pytest.raises(TypeError, match="SAESpec or saelab.pretrained.PretrainedSpec"):
        pretrained.get_saes(tiny, ["blocks.1.hook_resid_post"])


def test_an_sae_with_an_input_layer_norm_is_refused_clearly(hf_cache):
    """OpenAI's GPT-2 v5 SAEs (gpt2-small-resid-post-v5-32k, ...) normalise each input; saelab's SAE cannot."""
    release, sae_id = "gpt2-small-resid-post-v5-32k", "blocks.6.hook_resid_post"
    lookup = pretrained.registry()[release]
    folder = lookup.saes_map[sae_id]
    cfg = {"d_in": 768, "d_sae": 8, "hook_point": sae_id, "model_name": "gpt2-small", "dtype": "torch.float32",
           "device": "cpu", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2},
           "normalize_activations": "layer_norm"}
    put(hf_cache, lookup.repo_id, {f"{folder}/cfg.json": json_file(cfg),
                                   f"{folder}/sae_weights.safetensors": tensors_file(random_weights(768, 8))})
    with pytest.raises(ValueError, match=r"(?s)layer norm.*use sae_lens.SAE"):
        saelab.load_pretrained_sae(release, sae_id)
