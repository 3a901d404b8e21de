"""saelab.train_sparse: the sparse training path gives the dense path's losses and gradients, term by term, for
every architecture (the L1 / L0 penalties, JumpReLU's straight-through threshold gradient and AuxK included), and
the trainer takes it for relu / jumprelu once their latents are sparse."""

from __future__ import annotations

import pytest
import torch

import saelab.train as train_module
from saelab import train_sparse
from saelab.sae import SAE, SAEConfig
from saelab.train import TrainConfig, train_sae
from saelab.train_data import BatchStream, TensorSource
from saelab.train_sparse import (
    auxk_loss_dense,
    auxk_loss_sparse,
    dense_forward,
    sparse_forward,
    sparse_sparsity_loss,
    train_forward,
)

D_IN, D_SAE, K = 16, 64, 4

pytestmark = pytest.mark.usefixtures("one_thread")


def make_sae(arch: str, apply_b_dec_to_input: bool = True) -> SAE:
    """A float64 SAE with random biases (and, for jumprelu, thresholds spread so that many pre-activations fall
    within the bandwidth of their threshold, on both sides)."""
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if "topk" in arch else None,
                    l1_coefficient=0.3, l0_coefficient=0.7, jumprelu_bandwidth=0.4,
                    apply_b_dec_to_input=apply_b_dec_to_input)
    sae = SAE(cfg, seed=0).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=g, dtype=torch.float64) - 0.2)
        sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=g, dtype=torch.float64))
        sae.W_dec.mul_(1 + 0.2 * torch.rand(D_SAE, 1, generator=g, dtype=torch.float64))  # norms != 1: L1 reads them
        if arch == "jumprelu":
            sae.threshold.copy_(0.8 * torch.rand(D_SAE, generator=g, dtype=torch.float64))
    return sae


def batch(n: int = 41) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, D_IN, generator=g, dtype=torch.float64) * 1.5


def dead_mask() -> torch.Tensor:
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    return dead


def dense_terms(sae: SAE, x: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    out = sae.forward_train(x)
    terms = {"mse": (out.x_hat - x).pow(2).sum(-1).mean(), **sae.sparsity_loss(out, scale)}
    terms["aux_k"] = auxk_loss_dense(sae, out, (x - out.x_hat).detach(), dead_mask(), 5)
    return terms


def sparse_terms(sae: SAE, x: torch.Tensor, scale: float) -> dict[str, torch.Tensor]:
    x_hat, codes, pre, x_c = sparse_forward(sae, x)
    terms = {"mse": (x_hat - x).pow(2).sum(-1).mean(), **sparse_sparsity_loss(sae, codes, scale)}
    terms["aux_k"] = auxk_loss_sparse(sae, pre, x_c, (x - x_hat).detach(), dead_mask(), 5)
    return terms


def gradients(sae: SAE, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in sae.named_parameters()}


@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk", "batchtopk"])
def test_sparse_path_gives_the_dense_losses_and_gradients_term_by_term(arch, apply_b_dec_to_input):
    sae, x = make_sae(arch, apply_b_dec_to_input), batch()
    dense, sparse = dense_terms(sae, x, 0.6), sparse_terms(sae, x, 0.6)
    assert set(dense) == set(sparse) == {"mse", "aux_k"} | ({"l1"} if arch == "relu" else set()) | (
        {"l0"} if arch == "jumprelu" else set())
    for name in dense:
        assert torch.allclose(sparse[name], dense[name], rtol=1e-12, atol=1e-12), name
        expected = gradients(sae, dense_terms(sae, x, 0.6)[name])
        got = gradients(sae, sparse_terms(sae, x, 0.6)[name])
        assert set(got) == set(expected)
        for param in expected:
            assert torch.allclose(got[param], expected[param], rtol=1e-10, atol=1e-12), (name, param)
        assert any(g.abs().max() > 0 for g in expected.values()), name
    if arch == "jumprelu":  # the straight-through threshold gradient is there, from both terms, and it is exact
        for name in ("mse", "l0"):
            assert gradients(sae, dense_terms(sae, x, 0.6)[name])["threshold"].abs().max() > 0, name
    if arch == "relu":  # the L1 term reaches W_dec through its norms
        assert gradients(sae, dense_terms(sae, x, 0.6)["l1"])["W_dec"].abs().max() > 0


@pytest.mark.parametrize("k_aux", [5, 10, 22, 30])
def test_sparse_auxk_gives_the_dense_loss_and_gradients(k_aux):
    """22 of the 64 latents are dead: k_aux 5 takes the (token, latent) pairs route, 10 the dense dead columns with
    a top-k mask, 22 and 30 every dead latent of every token."""
    sae, x = make_sae("topk"), batch()

    def dense():
        out = sae.forward_train(x)
        return auxk_loss_dense(sae, out, (x - out.x_hat).detach() + 0.1, dead_mask(), k_aux)

    def sparse():
        x_hat, _, pre, x_c = sparse_forward(sae, x)
        return auxk_loss_sparse(sae, pre, x_c, (x - x_hat).detach() + 0.1, dead_mask(), k_aux)

    assert torch.allclose(sparse(), dense(), rtol=1e-12)
    expected, got = gradients(sae, dense()), gradients(sae, sparse())
    for name in ("W_enc", "b_enc", "b_dec", "W_dec"):
        assert expected[name].abs().max() > 0, name
        assert torch.allclose(got[name], expected[name], rtol=1e-10, atol=1e-12), name


def test_sparse_forward_reuses_a_buffer_for_pre():
    sae, x = make_sae("topk"), batch()
    buffer = torch.empty(len(x), D_SAE, dtype=torch.float64)
    x_hat, _, pre, _ = sparse_forward(sae, x, buffer)
    assert pre.data_ptr() == buffer.data_ptr()
    assert torch.allclose(x_hat, sparse_forward(sae, x)[0])


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_sparse_codes_are_the_dense_latents(arch):
    sae, x = make_sae(arch), batch()
    _, codes, pre, _ = sparse_forward(sae, x)
    latents = sae.train_activation(sae.pre_acts(x))
    assert torch.allclose(codes.to_dense(), latents, atol=1e-12)
    assert int((codes.acts > 0).sum()) == int((latents > 0).sum())
    if arch == "jumprelu":  # the pattern holds the pairs just below the threshold as well, with z = 0
        assert (codes.acts == 0).any()
        assert len(codes.col) < pre.numel()  # and not every pair


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_sparse_path_with_no_active_latent(arch):
    sae, x = make_sae(arch), batch(5)
    with torch.no_grad():
        sae.b_enc.fill_(-1e3)
    x_hat, codes, _, _ = sparse_forward(sae, x)
    assert len(codes.col) == 0 and codes.density == 0.0
    loss = (x_hat - x).pow(2).sum(-1).mean() + sum(sparse_sparsity_loss(sae, codes).values())
    out = sae.forward_train(x)
    expected = gradients(sae, (out.x_hat - x).pow(2).sum(-1).mean() + sum(sae.sparsity_loss(out).values()))
    got = gradients(sae, loss)
    assert float(loss.detach()) == pytest.approx(float((out.x_hat - x).pow(2).sum(-1).mean().detach()))
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-12), name


def _spy_paths(monkeypatch) -> list[str]:
    """Record the route of each training step: "pairs", "dense-from-pre" (train_forward) or "readable"."""
    paths: list[str] = []
    fast = train_module.train_forward

    def spy(*args, **kwargs):
        result = fast(*args, **kwargs)
        paths.append("pairs" if result.sparse else "dense-from-pre")
        return result

    original = SAE.forward_train

    def readable_spy(self, x):
        paths.append("readable")
        return original(self, x)

    monkeypatch.setattr(train_module, "train_forward", spy)
    monkeypatch.setattr(SAE, "forward_train", readable_spy)
    return paths


def toy_data(n: int = 2000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(48, D_IN, generator=g), dim=1)
    codes = (torch.rand(n, 48, generator=g) < 0.06) * torch.rand(n, 48, generator=g) * 4
    return codes @ directions + 0.5 + 0.05 * torch.randn(n, D_IN, generator=g)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_trainer_fast_routes_match_the_readable_trainer(arch, monkeypatch):
    """Forced onto the pairs route, or onto the dense-from-pre route, from the first step, a short run ends where
    the readable trainer ends (float64, AuxK on, an L1 / L0 warm-up), and logs the same numbers."""
    data = toy_data().double()
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, l1_coefficient=0.05, l0_coefficient=0.02,
                    dtype="float64")
    # no gradient clipping: the routes sum in different orders, and JumpReLU's step turns a last-bit difference in
    # the clipping factor into a latent on one side of its threshold or the other
    tcfg = dict(n_steps=12, batch_size=128, lr=3e-3, log_every=4, aux_k_coefficient=1 / 32,
                dead_tokens_threshold=128, sparsity_warmup_steps=5, max_grad_norm=None)

    def run(sparse_kernels):
        sae = SAE(cfg, seed=0).double()
        with torch.no_grad():
            sae.b_enc[:16] = -5.0  # latents that never fire: AuxK trains them
        return train_sae(data, cfg, TrainConfig(sparse_kernels=sparse_kernels, **tcfg), sae=sae, progress=False)

    paths = _spy_paths(monkeypatch)
    readable = run(False)
    assert set(paths) == {"readable"}
    for max_density, route in ((1.0, "pairs"), (0.0, "dense-from-pre")):
        monkeypatch.setattr(train_sparse, "MAX_SPARSE_DENSITY", max_density)
        paths.clear()
        fast = run(True)
        assert paths == [route] * 12
        assert any("aux_k" in row for row in fast.training_log)
        for name, tensor in readable.state_dict().items():
            assert torch.allclose(fast.state_dict()[name], tensor, rtol=1e-6, atol=1e-8), (route, name)
        for ours, theirs in zip(fast.training_log, readable.training_log, strict=True):
            assert ours.keys() == theirs.keys()
            for key in ours:
                assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (route, key)


def test_relu_trainer_switches_to_the_pairs_route_once_latents_are_sparse(monkeypatch):
    paths = _spy_paths(monkeypatch)
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="relu", l1_coefficient=2.0)
    train_sae(toy_data(), cfg, TrainConfig(n_steps=60, batch_size=128, lr=1e-2, log_every=10), progress=False)
    assert paths[0] == "dense-from-pre" and paths[-1] == "pairs", paths


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk", "batchtopk"])
def test_dense_forward_gives_the_readable_losses_and_gradients(arch):
    sae, x = make_sae(arch), batch()

    def terms(out):
        return {"mse": (out.x_hat - x).pow(2).sum(-1).mean(), **sae.sparsity_loss(out, 0.6)}

    expected, got = terms(sae.forward_train(x)), terms(dense_forward(sae, x)[0])
    for name in expected:
        assert torch.allclose(got[name], expected[name], rtol=1e-12), name
        want = gradients(sae, terms(sae.forward_train(x))[name])
        have = gradients(sae, terms(dense_forward(sae, x)[0])[name])
        for param in want:
            assert torch.allclose(have[param], want[param], rtol=1e-10, atol=1e-12), (name, param)


@pytest.mark.parametrize("max_density", [0.0, 1.0])
@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_train_forward_terms_and_bookkeeping_equal_the_readable_ones(arch, max_density):
    sae, x = make_sae(arch), batch()
    fast = train_forward(sae, x, 0.6, dead_mask(), 1 / 32, 5, max_density=max_density)
    assert fast.sparse == (max_density == 1.0)
    expected = dense_terms(sae, x, 0.6)
    expected["aux_k"] = expected["aux_k"] / 32
    assert set(fast.terms) == set(expected)
    for name in expected:
        assert torch.allclose(fast.terms[name], expected[name], rtol=1e-12), name
    active = sae.train_activation(sae.pre_acts(x)).detach() > 0
    assert torch.equal(fast.fired_ids, active.any(0).nonzero().squeeze(1))
    assert fast.n_active == int(active.sum())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_stream_still_refuses_a_chunk_with_nan_or_inf(bad):
    """The stream's one-pass finiteness check (min / max) catches what torch.isfinite(chunk).all() caught."""
    data = torch.randn(300, D_IN)
    data[123, 5] = bad
    stream = BatchStream(TensorSource(data, chunk_size=100), 50, check_finite=True)
    with pytest.raises(ValueError, match=r"NaN or inf values \(first at its row 23\)"):
        for _ in range(6):
            stream.next()
    assert len(BatchStream(TensorSource(data.nan_to_num(0.0, 0.0, 0.0), chunk_size=100), 300).next()) == 300


@pytest.mark.parametrize("k_aux", [5, 10])
@pytest.mark.parametrize("arch,max_density", [("topk", None), ("batchtopk", None), ("relu", 1.0), ("relu", 0.0),
                                              ("jumprelu", 1.0), ("jumprelu", 0.0)])
def test_low_precision_selection_recomputes_every_value_at_full_precision(arch, max_density, k_aux):
    """Pairs chosen from a lower-precision `pre` (float32 for this float64 SAE, as bfloat16 for a float32 one),
    values recomputed at full precision: with the same choices, the same losses and gradients as the full-precision
    step (AuxK on both of its routes: k_aux 5 takes the pairs, 10 the dead columns). relu / jumprelu on both routes:
    max_density 1.0 takes the pairs, 0.0 the dense route, which recomputes every value."""
    sae, x = make_sae(arch), batch()

    def step(**options):
        return train_forward(sae, x, dead=dead_mask(), aux_coef=1.0, k_aux=k_aux, max_density=max_density, **options)

    low, full = step(selection_dtype=torch.float32), step()
    assert low.sparse == (max_density != 0.0)
    assert low.pre.dtype == (torch.float32 if low.sparse else torch.float64)
    assert set(low.terms) == set(full.terms) >= {"mse", "aux_k"}
    for name in full.terms:
        assert torch.allclose(low.terms[name], full.terms[name], rtol=1e-12, atol=1e-12), name
        expected = gradients(sae, step().terms[name])
        got = gradients(sae, step(selection_dtype=torch.float32).terms[name])
        for param in expected:
            assert torch.allclose(got[param], expected[param], rtol=1e-10, atol=1e-12), (name, param)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu", "jumprelu"])
def test_bfloat16_selection_trains_the_same_sae_up_to_near_ties(arch):
    data = toy_data(4000)
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if "topk" in arch else None)
    runs = {dtype: train_sae(TensorSource(data), cfg, TrainConfig(n_steps=40, batch_size=256, lr=3e-3,
                                                                  selection_dtype=dtype), progress=False)
            for dtype in ("float32", "bfloat16")}
    assert runs["bfloat16"].cfg.metadata["training"]["selection_dtype"] == "bfloat16"
    with torch.no_grad():
        ev = {dtype: float(1 - (sae(data) - data).pow(2).sum() / (data - data.mean(0)).pow(2).sum())
              for dtype, sae in runs.items()}
        l0 = {dtype: float((sae.encode(data) > 0).sum(1).float().mean()) for dtype, sae in runs.items()}
    assert ev["float32"] > 0.5 and abs(ev["bfloat16"] - ev["float32"]) < 0.01, ev
    assert abs(l0["bfloat16"] - l0["float32"]) <= 0.05 * l0["float32"] + 0.1, l0


def test_selection_dtype_is_checked():
    with pytest.raises(ValueError, match="selection_dtype must be"):
        TrainConfig(n_steps=2, selection_dtype="float16")


def test_batch_topk_ranks_only_the_values_above_its_floor_and_picks_the_same_pairs():
    pre = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))  # float32: no ties
    everything = train_sparse._select_batch_topk(pre, 4)
    kth = float(pre.reshape(-1).topk(4 * 64).values[-1])
    for floor in (0.5 * kth, 0.99 * kth):  # a floor below the k*B-th value: the same pairs from fewer candidates
        for ours, reference in zip(train_sparse._select_batch_topk(pre, 4, floor), everything):
            assert torch.equal(ours, reference)
    too_high = train_sparse._select_batch_topk(pre, 4, 1.01 * kth)  # fewer than k*B above it: ranks everything
    for ours, reference in zip(too_high, everything):
        assert torch.equal(ours, reference)
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=256, architecture="batchtopk", k=4), seed=0)
    sae.topk_threshold.fill_(kth)  # the SAE's running threshold sets the floor
    pairs = train_sparse._select(sae, pre)
    assert torch.equal(pairs.col, everything[1]) and torch.equal(pairs.crow, everything[0])
