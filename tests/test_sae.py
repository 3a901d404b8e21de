"""saelab.sae: each architecture's maths against hand-written formulas, configs, and the folder format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from saelab._version import __version__
from saelab.sae import (
    ARCHITECTURES,
    SAE,
    BatchTopKSAE,
    JumpReLUSAE,
    ReLUSAE,
    SAEConfig,
    SAEOutput,
    TopKSAE,
)
from saelab.sae_files import load_extra_weights

D_IN, D_SAE, K = 12, 40, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def make(arch: str, seed: int = 0, **kw) -> SAE:
    """An SAE with non-trivial biases (and thresholds), so every term of the formulas matters."""
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if arch in ("topk", "batchtopk") else None, **kw)
    sae = SAE(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=g))
        sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=g))
        if arch == "jumprelu":
            sae.threshold.copy_(0.4 * torch.rand(D_SAE, generator=g))
        if arch == "batchtopk":
            sae.topk_threshold.fill_(0.25)
    return sae.eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(9, D_IN, generator=torch.Generator().manual_seed(1))


def test_registry_and_dispatch():
    assert set(ARCHITECTURES) == {"relu", "topk", "batchtopk", "jumprelu"}
    for arch, cls in [("relu", ReLUSAE), ("topk", TopKSAE), ("batchtopk", BatchTopKSAE), ("jumprelu", JumpReLUSAE)]:
        sae = make(arch)
        assert type(sae) is cls and isinstance(sae, SAE)
    assert SAEConfig(d_in=4, d_sae=8, architecture="standard").architecture == "relu"  # SAELens' name


def test_copy_keeps_the_class(x):
    import copy

    sae = make("batchtopk")
    clone = copy.deepcopy(sae)
    assert type(clone) is BatchTopKSAE and torch.equal(clone.encode(x), sae.encode(x))


def test_parameter_names_and_shapes():
    sae = make("jumprelu")
    shapes = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    assert shapes == {"W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, D_IN), "b_enc": (D_SAE,), "b_dec": (D_IN,),
                      "threshold": (D_SAE,)}
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE))  # unit-norm decoder rows at init
    assert torch.equal(sae.W_enc, sae.W_dec.T)  # encoder initialised as the decoder's transpose


def _pre(sae, x):
    return (x - sae.b_dec) @ sae.W_enc + sae.b_enc


def test_relu_formula(x):
    sae = make("relu")
    z = sae.encode(x)
    assert torch.allclose(z, torch.clamp(_pre(sae, x), min=0), atol=1e-6)
    assert torch.allclose(sae.decode(z), z @ sae.W_dec + sae.b_dec, atol=1e-6)
    assert torch.allclose(sae(x), sae.decode(z))


def test_topk_formula(x):
    sae = make("topk")
    z = sae.encode(x)
    pre = _pre(sae, x)
    for row, pre_row in zip(z.detach(), pre.detach(), strict=True):
        order = sorted(range(D_SAE), key=lambda j: -float(pre_row[j].detach()))
        expected = torch.zeros(D_SAE)
        for j in order[:K]:
            expected[j] = max(float(pre_row[j]), 0.0)
        assert torch.allclose(row, expected, atol=1e-6)
    assert ((z != 0).sum(-1) <= K).all()


def test_batchtopk_training_and_inference_formulas(x):
    sae = make("batchtopk")
    pre = _pre(sae, x)
    z_train = sae.train_activation(pre)
    relu = pre.clamp(min=0).flatten()
    kth = relu.sort(descending=True).values[K * len(x) - 1]
    expected = torch.where(pre.clamp(min=0) >= kth, pre.clamp(min=0), torch.zeros_like(pre))
    assert torch.allclose(z_train, expected, atol=1e-6)
    assert int((z_train != 0).sum()) <= K * len(x)  # k on average over the batch, not per token
    z = sae.encode(x)  # inference: one threshold instead of the batch
    assert torch.allclose(z, torch.where(pre > 0.25, pre, torch.zeros_like(pre)), atol=1e-6)


def test_batchtopk_threshold_is_ema_of_smallest_kept():
    sae = make("batchtopk")
    sae.topk_threshold.fill_(-1.0)  # unset: the first batch sets it
    sae.update_threshold(torch.tensor([[0.0, 0.5, 2.0]]))
    assert float(sae.topk_threshold) == pytest.approx(0.5)
    sae.update_threshold(torch.tensor([[0.0, 1.5, 3.0]]))
    assert float(sae.topk_threshold) == pytest.approx(0.99 * 0.5 + 0.01 * 1.5)


def test_jumprelu_formula(x):
    sae = make("jumprelu")
    pre = _pre(sae, x)
    assert torch.allclose(sae.encode(x), pre * (pre > sae.threshold), atol=1e-6)
    assert torch.allclose(sae.train_activation(pre), sae.encode(x), atol=1e-6)  # same forward in training


def test_jumprelu_straight_through_gradients():
    sae = SAE(SAEConfig(d_in=2, d_sae=3, architecture="jumprelu", l0_coefficient=0.7))
    eps = sae.cfg.jumprelu_bandwidth
    theta = torch.tensor([0.31, 0.01, 0.2])
    with torch.no_grad():
        sae.threshold.copy_(theta)
    pre = torch.tensor([[0.30, 0.02, -1.0], [0.401, 0.9, 0.011]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (sae.train_activation(pre) * upstream).sum().backward()
    near = ((pre.detach() - theta).abs() < eps / 2).float()  # rectangle kernel of width eps
    assert torch.allclose(sae.threshold.grad, (-(theta / eps) * near * upstream).sum(0), atol=1e-6)
    assert torch.allclose(pre.grad, (pre.detach() > theta).float() * upstream)
    # L0 penalty: mean over tokens of sum_j H(pre_j - theta_j); d/dtheta estimated as -(1/eps) * kernel
    sae.threshold.grad = None
    l0 = sae.sparsity_loss(SAEOutput(None, None, pre.detach()))["l0"]
    assert float(l0.detach()) == pytest.approx(0.7 * float((pre.detach() > theta).float().sum(-1).mean()))
    l0.backward()
    assert torch.allclose(sae.threshold.grad, 0.7 * (-(1 / eps) * near).sum(0) / 2, atol=1e-5)


def test_relu_l1_penalty(x):
    sae = make("relu", l1_coefficient=0.3)
    out = sae.forward_train(x)
    expected = 0.3 * (out.latents * sae.W_dec.norm(dim=1)).sum(-1).mean()
    assert torch.allclose(sae.sparsity_loss(out)["l1"], expected)


def test_batch_dimensions(x):
    sae = make("topk")
    x3 = x.reshape(3, 3, D_IN)
    assert torch.allclose(sae(x3).reshape(9, D_IN), sae(x), atol=1e-6)


def test_fold_scaling_factor(x):
    sae = make("jumprelu")
    scaled = {name: t.clone() for name, t in sae.state_dict().items()}
    z_scaled, out_scaled = sae.encode(3.0 * x), sae(3.0 * x) / 3.0
    sae.fold_activation_norm_scaling_factor(3.0)
    assert torch.allclose(sae.encode(x), z_scaled, atol=1e-5)
    assert torch.allclose(sae(x), out_scaled, atol=1e-5)
    assert scaled["threshold"].equal(sae.threshold)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "topk", "k": 41}, "k must be between 1 and d_sae=40"),
        ({"architecture": "batchtopk"}, "need k"),
        ({"architecture": "gated"}, "Unknown SAE architecture 'gated'"),
        ({"normalize_activations": "layer_norm"}, "normalize_activations must be one of"),
        ({"d_in": 0}, "must be positive"),
        ({"dtype": "int8"}, "dtype must be one of"),
    ],
)
def test_bad_configs(kwargs, message):
    base = {"d_in": D_IN, "d_sae": D_SAE, "architecture": "relu"}
    with pytest.raises(ValueError, match=message):
        SAEConfig(**{**base, **kwargs})


def test_config_round_trip():
    cfg = SAEConfig(d_in=8, d_sae=32, architecture="topk", k=3, hook_name="blocks.0.hook_resid_post",
                    model_name="m", dataset={"name": "d", "fingerprint": "abc"}, metadata={"note": 1})
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_save_load_round_trip(arch, tmp_path, x):
    sae = make(arch, hook_name="blocks.1.hook_resid_pre", model_name="tiny",
               dataset={"name": "toy", "fingerprint": "f00", "context_size": 32})
    sae.cfg.metadata["training"] = {"lr": 1e-3}
    sae.save(tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    loaded = SAE.load(tmp_path / "sae")
    expected_arch = "jumprelu" if arch == "batchtopk" else arch  # batchtopk is saved in its inference form
    assert loaded.architecture == expected_arch
    assert torch.allclose(loaded.encode(x), sae.encode(x), atol=1e-6)
    assert torch.allclose(loaded(x), sae(x), atol=1e-6)
    cfg = loaded.cfg
    assert (cfg.hook_name, cfg.model_name, cfg.dataset["fingerprint"]) == ("blocks.1.hook_resid_pre", "tiny", "f00")
    assert cfg.metadata["training"] == {"lr": 1e-3}
    assert cfg.metadata["training_architecture"] == arch
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["metadata"]["saelab_version"] == __version__
    assert raw["metadata"]["context_size"] == 32
    # saving again gives the same file
    loaded.save(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "cfg.json").read_text())
    assert again["metadata"]["saelab_config"] == raw["metadata"]["saelab_config"]


def test_extra_modules_saved_apart(tmp_path):
    sae = make("topk")
    head = torch.nn.Linear(20, 3)
    sae.save(tmp_path / "s", extra_modules={"head": head})
    assert set(load_file(tmp_path / "s" / "sae_weights.safetensors")) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    extra = load_extra_weights(tmp_path / "s")
    fresh = torch.nn.Linear(20, 3)
    fresh.load_state_dict(extra["head"])
    assert torch.equal(fresh.weight, head.weight)
    assert load_extra_weights(tmp_path / "nothing-here") == {}


def test_load_refuses_missing_files(tmp_path):
    make("relu").save(tmp_path / "s")
    (tmp_path / "s" / "sae_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no sae_weights.safetensors"):
        SAE.load(tmp_path / "s")
    make("relu").save(tmp_path / "t")
    (tmp_path / "t" / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="no cfg.json"):
        SAE.load(tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SAE.load(tmp_path / "missing")
    make("relu").save(tmp_path / "u")
    (tmp_path / "u" / "sae_weights.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        SAE.load(tmp_path / "u")


def test_load_refuses_wrong_shapes_and_names(tmp_path):
    make("jumprelu").save(tmp_path / "s")
    weights = tmp_path / "s" / "sae_weights.safetensors"
    tensors = load_file(weights)
    save_file({**tensors, "W_enc": torch.zeros(D_IN, D_SAE + 1)}, weights)
    with pytest.raises(ValueError, match=r"tensor 'W_enc' has shape \(12, 41\) but cfg.json .* expects \(12, 40\)"):
        SAE.load(tmp_path / "s")
    save_file({k: v for k, v in tensors.items() if k != "threshold"}, weights)
    with pytest.raises(ValueError, match="has no tensor 'threshold'"):
        SAE.load(tmp_path / "s")
    save_file({**tensors, "stray": torch.zeros(2)}, weights)
    with pytest.raises(ValueError, match=r"unexpected tensors \['stray'\]"):
        SAE.load(tmp_path / "s")
    save_file(tensors, weights)
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    raw["d_sae"] = 50
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"cfg.json \(d_in=12, d_sae=50\)"):
        SAE.load(tmp_path / "s")


def test_save_is_atomic_and_overwrites(tmp_path):
    folder = tmp_path / "s"
    make("relu", seed=0).save(folder)
    make("relu", seed=1).save(folder)
    assert torch.equal(SAE.load(folder).W_dec, make("relu", seed=1).W_dec)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind
