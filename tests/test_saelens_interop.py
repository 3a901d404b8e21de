"""Files written by saelab load in SAELens with the same encode/decode, and SAELens' files load in saelab."""

from __future__ import annotations

import warnings

import pytest
import torch

from saelab.sae import SAE, SAEConfig
from saelab.train import TrainConfig, train_sae

sae_lens = pytest.importorskip("sae_lens")

D_IN, D_SAE, K = 16, 48, 5
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def x() -> torch.Tensor:
    return 2 * torch.randn(64, D_IN, generator=torch.Generator().manual_seed(3))


def _randomise(sae, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(0.5 * torch.rand(p.shape, generator=g))
            elif name.startswith("b_"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _load_saelens(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sae_lens.SAE.load_from_disk(str(folder), device="cpu")


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_saelab_folder_loads_in_saelens(arch, tmp_path, x):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if arch in ("topk", "batchtopk") else None,
                    hook_name="blocks.1.hook_resid_pre", model_name="tiny-gemma3")
    ours = SAE(cfg, seed=0)
    _randomise(ours)
    if arch == "batchtopk":
        ours.topk_threshold.fill_(0.3)
    ours.eval().save(tmp_path / "sae")
    theirs = _load_saelens(tmp_path / "sae")
    expected = {"relu": "StandardSAE", "topk": "TopKSAE", "batchtopk": "JumpReLUSAE", "jumprelu": "JumpReLUSAE"}
    assert type(theirs).__name__ == expected[arch]
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_pre"
    assert theirs.cfg.metadata.model_name == "tiny-gemma3"
    with torch.no_grad():
        z = ours.encode(x)
        assert (z != 0).any()
        assert torch.allclose(theirs.encode(x), z, atol=ATOL)
        assert torch.allclose(theirs.decode(z), ours.decode(z), atol=ATOL)
        assert torch.allclose(theirs(x), ours(x), atol=ATOL)


def test_trained_saelab_sae_loads_in_saelens(tmp_path, x):
    acts = 2 * torch.randn(2048, D_IN, generator=torch.Generator().manual_seed(0))
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="batchtopk", k=K,
                    normalize_activations="expected_average_only_in")
    sae = train_sae(acts, cfg, TrainConfig(n_steps=20, batch_size=256, lr=1e-2), progress=False)
    sae.save(tmp_path / "sae")
    theirs = _load_saelens(tmp_path / "sae")
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), sae.encode(x), atol=ATOL)
        assert torch.allclose(theirs(x), sae(x), atol=ATOL)
    assert theirs.cfg.normalize_activations == "none"  # the input scaling was folded into the weights


def _saelens_sae(arch: str):
    if arch == "standard":
        return sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE))
    if arch == "topk":
        return sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    if arch == "topk_rescaled":  # pre-acts multiplied by decoder norms; saelab folds the norms in on load
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True))
        with torch.no_grad():
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
        return sae
    return sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE))


@pytest.mark.parametrize("arch", ["standard", "topk", "topk_rescaled", "jumprelu"])
def test_saelens_folder_loads_in_saelab(arch, tmp_path, x):
    torch.manual_seed(0)
    theirs = _saelens_sae(arch)
    _randomise(theirs)
    theirs.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    theirs.cfg.metadata.model_name = "gpt2"
    theirs.save_model(tmp_path / "sae")
    ours = SAE.load(tmp_path / "sae")
    assert ours.architecture == {"standard": "relu", "topk_rescaled": "topk"}.get(arch, arch)
    assert (ours.cfg.hook_name, ours.cfg.model_name) == ("blocks.0.hook_resid_post", "gpt2")
    with torch.no_grad():
        z = theirs.encode(x)
        assert (z != 0).any()
        assert torch.allclose(ours.encode(x), z, atol=ATOL)
        assert torch.allclose(ours(x), theirs(x), atol=ATOL)


def test_saelens_batchtopk_inference_folder_loads_in_saelab(tmp_path, x):
    torch.manual_seed(0)
    trainer_sae = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    _randomise(trainer_sae)
    trainer_sae.topk_threshold = torch.tensor(0.2, dtype=torch.double)
    trainer_sae.save_inference_model(tmp_path / "sae")  # SAELens writes BatchTopK as JumpReLU
    theirs = _load_saelens(tmp_path / "sae")
    ours = SAE.load(tmp_path / "sae")
    assert ours.architecture == "jumprelu" and ours.cfg.metadata["training_architecture"] == "batchtopk"
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=ATOL)
        assert torch.allclose(ours(x), theirs(x), atol=ATOL)
