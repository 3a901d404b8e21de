"""saelab.metrics against direct computations (numpy, per-sequence loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saelab import metrics as M
from saelab.sae import SAE, SAEConfig
from saelab.train_data import TensorSource

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=g) + 2.0
    x_hat = x + 0.3 * torch.randn(300, 8, generator=g)
    z = torch.relu(torch.randn(300, 20, generator=g) - 1.0)
    z[:, 5] = 0  # a dead latent
    return x, x_hat, z


def test_formulas_against_numpy(pair):
    x, x_hat, z = pair
    X, Xh, Z = x.double().numpy(), x_hat.double().numpy(), z.double().numpy()
    assert M.l0(z) == pytest.approx(np.mean([np.count_nonzero(row) for row in Z]))
    assert M.l1(z) == pytest.approx(np.abs(Z).sum(1).mean())
    assert M.mse(x, x_hat) == pytest.approx(((X - Xh) ** 2).mean())
    assert M.explained_variance(x, x_hat) == pytest.approx(1 - ((X - Xh) ** 2).sum() / ((X - X.mean(0)) ** 2).sum())
    cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(X, Xh, strict=True)]
    assert M.cossim(x, x_hat) == pytest.approx(np.mean(cos))
    assert M.l2_ratio(x, x_hat) == pytest.approx(np.mean(np.linalg.norm(Xh, axis=1) / np.linalg.norm(X, axis=1)))
    assert M.relative_reconstruction_bias(x, x_hat) == pytest.approx(
        (Xh**2).sum(1).mean() / (X * Xh).sum(1).mean())
    density = M.feature_density(z)
    assert np.allclose(density.numpy(), (Z != 0).mean(0))
    assert M.frac_alive(z) == pytest.approx(((Z != 0).any(0)).mean()) == M.frac_alive(density)
    assert M.dead_latents(density).nonzero().flatten().tolist() == [5]


def test_explained_variance_extremes():
    x = torch.randn(50, 4)
    assert M.explained_variance(x, x) == 1.0
    assert M.explained_variance(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-12)


def test_density_histogram():
    density = torch.tensor([0.0, 0.0, 1e-5, 1e-3, 1e-3, 0.1, 0.5])
    hist = M.activation_density_histogram(density, bins=[-6, -4, -2, 0])
    assert hist["n_dead"] == 2
    assert hist["counts"].tolist() == [1, 2, 2]
    auto = M.activation_density_histogram(density, bins=12)
    assert auto["counts"].sum() == 5 and len(auto["edges"]) == 13


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_core_metrics_streaming_equals_direct(arch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 8, generator=g) * 3 + 1
    sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture=arch, k=3 if arch == "topk" else None), seed=0).eval()
    with torch.no_grad():
        z = sae.encode(x)
        x_hat = sae.decode(z)
    direct = {"l0": M.l0(z), "l1": M.l1(z), "mse": M.mse(x, x_hat),
              "explained_variance": M.explained_variance(x, x_hat),
              "cossim": M.cossim(x, x_hat), "l2_ratio": M.l2_ratio(x, x_hat), "frac_alive": M.frac_alive(z),
              "relative_reconstruction_bias": M.relative_reconstruction_bias(x, x_hat)}
    for data in (x, TensorSource(x, chunk_size=300)):  # a tensor, and a chunked source read in small batches
        got = M.core_metrics(sae, data, batch_size=128, progress=False)
        for name, value in direct.items():
            assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
        assert torch.allclose(got["feature_density"], M.feature_density(z))
        assert got["n_tokens"] == 1000
    assert M.core_metrics(sae, x, max_tokens=250, progress=False)["n_tokens"] == 250


# ---- downstream: splicing into a tiny model -------------------------------------------------------------------

HOOK = "blocks.1.hook_resid_pre"
TEXTS = ["the cat sat on the mat", "hello world", "sparse autoencoders find features in activations"]


@pytest.fixture
def model(tiny):
    return tiny  # the session's tiny random Gemma 3 bridge (tests/conftest.py)


def _identity_sae(d: int) -> SAE:
    """relu(x) - relu(-x) = x: a ReLU SAE with 2d latents that reconstructs perfectly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="relu", hook_name=HOOK))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


@torch.no_grad()
def _direct(model, sae, texts):
    """Each text alone (no padding), BOS kept clean, the loss written out position by position."""
    ce = {"clean": [], "sae": [], "zero": []}
    kl = {"sae": [], "zero": []}
    for text in texts:
        tokens = model.tokenizer(text, return_tensors="pt")["input_ids"]
        assert tokens[0, 0] == model.tokenizer.bos_token_id

        def splice(kind):
            def hook(act, hook=None):
                act = act.clone()
                act[:, 1:] = 0 if kind == "zero" else sae(act[:, 1:])
                return act
            return hook

        logp = {"clean": F.log_softmax(model(tokens, return_type="logits").float(), -1)[0]}
        for kind in ("sae", "zero"):
            logits = model.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(HOOK, splice(kind))])
            logp[kind] = F.log_softmax(logits.float(), -1)[0]
        n = tokens.shape[1]
        for kind in ce:
            ce[kind] += [-float(logp[kind][t, tokens[0, t + 1]]) for t in range(1, n - 1)]
        for kind in kl:
            p = logp["clean"].exp()
            kl[kind] += [float((p[t] * (logp["clean"][t] - logp[kind][t])).sum()) for t in range(1, n)]
    mean = {k: float(np.mean(v)) for k, v in ce.items()}
    kl_mean = {k: float(np.mean(v)) for k, v in kl.items()}
    return {
        "ce_loss_score": (mean["zero"] - mean["sae"]) / (mean["zero"] - mean["clean"]),
        "kl_div_score": (kl_mean["zero"] - kl_mean["sae"]) / kl_mean["zero"],
        "ce_loss_without_sae": mean["clean"],
        "kl_div_with_ablation": kl_mean["zero"],
    }


def test_reconstruction_scores_match_direct_computation(model):
    sae = SAE(SAEConfig(d_in=64, d_sae=256, architecture="topk", k=8, hook_name=HOOK), seed=0).eval()
    with torch.no_grad():  # a plausible b_dec, so the SAE is neither perfect nor useless
        tokens = model.tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
        sae.b_dec.copy_(cache[HOOK][0, 1:].mean(0))
    got = M.reconstruction_metrics(model, sae, TEXTS, batch_size=2, progress=False)  # batched, left-padded
    expected = _direct(model, sae, TEXTS)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
    assert got["n_tokens"] == sum(len(model.tokenizer(t)["input_ids"]) - 1 for t in TEXTS)
    # separate float32 passes: a ratio of loss gaps can drift by ~2e-5 between them (seen on a fresh clone)
    assert M.ce_loss_score(model, sae, TEXTS, progress=False) == pytest.approx(got["ce_loss_score"], rel=1e-4)
    assert M.kl_div_score(model, sae, TEXTS, progress=False) == pytest.approx(got["kl_div_score"], rel=1e-4)


def test_perfect_and_useless_saes_score_one_and_zero(model):
    enc = model.tokenizer(TEXTS, return_tensors="pt", padding=True)
    perfect = M.reconstruction_metrics(model, _identity_sae(64), enc["input_ids"], enc["attention_mask"],
                                       progress=False)
    assert perfect["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["kl_div_score"] == pytest.approx(1.0, abs=1e-4)
    useless = _identity_sae(64)
    with torch.no_grad():
        useless.W_dec.zero_()
    zero = M.reconstruction_metrics(model, useless, enc["input_ids"], enc["attention_mask"], progress=False)
    assert zero["ce_loss_score"] == pytest.approx(0.0, abs=1e-6)
    assert zero["kl_div_score"] == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_metrics_needs_a_hook(model):
    sae = SAE(SAEConfig(d_in=64, d_sae=128, architecture="relu"))
    with pytest.raises(ValueError, match="has no hook_name"):
        M.reconstruction_metrics(model, sae, TEXTS, progress=False)
