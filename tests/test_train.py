"""saelab.train (with train_data, train_sparse, checkpoints): the data stream, the fast path's gradients, the decoder
constraint, AuxK, checkpoints and resume."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from saelab.activation_cache import ShardedTokens
from saelab.activations import extract
from saelab.checkpoints import find_checkpoints
from saelab.metrics import core_metrics
from saelab.sae import SAE, SAEConfig
from saelab.tasks import load_task
from saelab.train import TrainConfig, geometric_median, lr_at, remove_parallel_gradient, train_sae
from saelab.train_data import BatchStream, TensorSource, TokenSource
from saelab.train_sparse import auxk_loss_dense, auxk_loss_sparse, sparse_forward

D_IN, D_SAE, K = 16, 64, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_data(n: int = 3000, seed: int = 0) -> torch.Tensor:
    """Sparse combinations of 48 random unit directions plus an offset: something an SAE can learn."""
    g = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(48, D_IN, generator=g), dim=1)
    codes = (torch.rand(n, 48, generator=g) < 0.06) * torch.rand(n, 48, generator=g) * 4
    return codes @ directions + 0.5 + 0.05 * torch.randn(n, D_IN, generator=g)


def cfg_for(arch: str, **kw) -> SAEConfig:
    return SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K if arch in ("topk", "batchtopk") else None,
                     l1_coefficient=0.02, l0_coefficient=0.01, **kw)


# ---- data -------------------------------------------------------------------------------------------------------


def test_stream_visits_every_row_once_per_epoch_and_keeps_side_rows_aligned():
    ids = torch.arange(1000, dtype=torch.float32)
    acts = torch.stack([ids, -ids], dim=1)
    source = TensorSource(acts, side={"id": ids.long()}, chunk_size=128)  # 8 chunks, the last one short
    assert isinstance(source, TokenSource)
    stream = BatchStream(source, batch_size=64, seed=3, window_chunks=3)
    seen = []
    for _ in range(math.ceil(1000 / 64) + 1):
        batch = stream.next()
        assert torch.equal(batch.side["id"].float(), batch.acts[:, 0])  # side data travel with their rows
        seen.append(batch.side["id"])
    seen = torch.cat(seen)
    assert torch.equal(seen[:1000].sort().values, torch.arange(1000))  # epoch 0: each row exactly once
    assert not torch.equal(seen[:1000], torch.arange(1000))  # ... shuffled
    assert stream.cursor()["epoch"] == 1


def test_stream_is_a_function_of_seed_and_cursor():
    source = TensorSource(toy_data(700), chunk_size=100)
    a = BatchStream(source, 96, seed=1, window_chunks=2)
    first = [a.next().acts for _ in range(5)]
    cursor = a.cursor()
    rest = [a.next().acts for _ in range(9)]  # crosses windows and an epoch boundary
    b = BatchStream(source, 96, seed=1, window_chunks=2)
    assert all(torch.equal(x, y) for x, y in zip(first, [b.next().acts for _ in range(5)], strict=True))
    c = BatchStream(source, 96, seed=1, window_chunks=2, cursor=cursor)  # resume without replaying
    assert all(torch.equal(x, y) for x, y in zip(rest, [c.next().acts for _ in range(9)], strict=True))
    d = BatchStream(source, 96, seed=2, window_chunks=2)
    assert not torch.equal(first[0], d.next().acts)


def test_stream_loads_only_a_window_at_a_time():
    class Counting(TensorSource):
        loaded: list[int] = []

        def chunk(self, i):
            self.loaded.append(i)
            return super().chunk(i)

    source = Counting(toy_data(1000), chunk_size=100)
    stream = BatchStream(source, 50, seed=0, window_chunks=2)
    stream.next()
    assert len(source.loaded) == 2


def test_training_streams_from_an_extraction_cache(tiny, tmp_path):
    """ShardedTokens, the reader of `extract`'s token shards, is a TokenSource whose hook, model and dataset
    metadata end up in the trained SAE's config."""
    hook = "blocks.0.hook_resid_post"
    texts = ["the bank of the river", "a text about money", "hi there", "the river bank again", "one more text"]
    acts = extract(tiny, texts, hook, "none", cache=tmp_path / "c", shard_size=2, progress=False)
    source = ShardedTokens(tmp_path / "c", hook)
    assert isinstance(source, TokenSource)
    assert (source.d_in, len(source)) == (tiny.cfg.d_model, 3)
    assert torch.equal(torch.cat([source.chunk(i) for i in range(3)]), acts.tensor)
    cfg = SAEConfig(d_in=source.d_in, d_sae=64, architecture="topk", k=K)
    sae = train_sae(source, cfg, TrainConfig(n_steps=4, batch_size=16), progress=False)
    assert (sae.cfg.hook_name, sae.cfg.model_name) == (hook, source.meta["model"])
    assert sae.cfg.dataset == source.metadata and sae.cfg.dataset["hook"] == hook


# ---- maths ------------------------------------------------------------------------------------------------------


def test_geometric_median_matches_scipy():
    points = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    points[:5] += 20  # outliers pull the mean but hardly the median
    reference = minimize(lambda y: np.linalg.norm(points.numpy() - y, axis=1).sum(), points.mean(0).numpy(),
                         method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    ours = geometric_median(points).numpy()
    assert np.allclose(ours, reference, atol=1e-5)
    assert np.linalg.norm(ours - points[5:].mean(0).numpy()) < np.linalg.norm(points.mean(0).numpy() - ours)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_path_gradients_equal_dense_autograd(arch):
    """The fast path's custom backward gives the gradients torch.autograd computes through the dense maths."""
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=K), seed=0).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=g, dtype=torch.float64))
        sae.b_dec.copy_(0.1 * torch.randn(D_IN, generator=g, dtype=torch.float64))
    x = torch.randn(37, D_IN, generator=g, dtype=torch.float64)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True

    def gradients(loss_fn):
        sae.zero_grad()
        loss_fn().backward()
        return {name: p.grad.clone() for name, p in sae.named_parameters()}

    def dense():
        out = sae.forward_train(x)
        return (out.x_hat - x).pow(2).sum(-1).mean() + auxk_loss_dense(sae, out, (x - out.x_hat).detach(), dead, 7)

    def sparse():
        x_hat, codes, pre, x_c = sparse_forward(sae, x)
        assert torch.allclose(codes.to_dense(), sae.train_activation(pre))
        return (x_hat - x).pow(2).sum(-1).mean() + auxk_loss_sparse(sae, pre, x_c, (x - x_hat).detach(), dead, 7)

    expected, got = gradients(dense), gradients(sparse)
    for name in expected:
        assert expected[name].abs().max() > 0
        assert torch.allclose(got[name], expected[name], atol=1e-12), name


def test_remove_parallel_gradient():
    W = F.normalize(torch.randn(10, 6), dim=1)
    grad = torch.randn(10, 6)
    original = grad.clone()
    remove_parallel_gradient(W, grad)
    assert torch.allclose((grad * W).sum(1), torch.zeros(10), atol=1e-6)  # nothing left along the rows
    parallel = (original * W).sum(1, keepdim=True) * W
    assert torch.allclose(grad + parallel, original, atol=1e-6)  # only the parallel part was removed


def test_train_config_round_trip():
    tcfg = TrainConfig(n_tokens=10_000, batch_size=128, lr=1e-3, decay="cosine", checkpoint_every=5)
    assert TrainConfig.from_dict(tcfg.to_dict()) == tcfg
    assert tcfg.total_steps == 79


def test_lr_schedule():
    tcfg = TrainConfig(n_steps=100, warmup_steps=10, decay="linear", decay_fraction=0.2, min_lr=0.1)
    lrs = [lr_at(s, 1.0, tcfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(lr == 1.0 for lr in lrs[10:80])
    assert lrs[80] == pytest.approx(1.0) and 0.1 < lrs[99] < 0.2 and lrs == sorted(lrs[:80]) + lrs[80:]
    cosine = TrainConfig(n_steps=50, warmup_steps=0, decay="cosine", decay_fraction=1.0, min_lr=0.0)
    assert lr_at(25, 2.0, cosine) == pytest.approx(1.0)


# ---- training -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_training_learns_and_keeps_decoder_rows_unit_norm(arch):
    data = toy_data()
    sae = train_sae(data, cfg_for(arch), TrainConfig(n_steps=150, batch_size=256, lr=3e-3, log_every=25),
                    progress=False)
    log = sae.training_log
    assert [entry["step"] for entry in log] == [25, 50, 75, 100, 125, 150]
    assert {"loss", "mse", "l0", "explained_variance", "dead_fraction", "lr"} <= set(log[-1])
    assert log[-1]["mse"] < log[0]["mse"]
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    metrics = core_metrics(sae, data, progress=False)
    assert metrics["explained_variance"] > 0.6
    if arch == "topk":
        assert metrics["l0"] <= K
    recipe = sae.cfg.metadata["training"]
    assert recipe["n_steps"] == 150 and recipe["lr"] == 3e-3 and sae.cfg.metadata["b_dec_init"] == "geometric_median"
    assert not sae.training  # returned in eval mode


def test_b_dec_initialisation():
    data = toy_data(500)
    sample = BatchStream(TensorSource(data, chunk_size=128), 10_000, seed=0).take(10_000, within_epoch=True).acts
    assert len(sample) == 500  # the init sample never repeats rows
    tcfg = dict(n_steps=1, batch_size=500, lr=1e-12, init_samples=500, warmup_steps=1)
    sae = train_sae(data, cfg_for("relu"), TrainConfig(**tcfg, b_dec_init="mean"), progress=False)
    assert torch.allclose(sae.b_dec, data.mean(0), atol=1e-4)
    sae = train_sae(data, cfg_for("relu"), TrainConfig(**tcfg, b_dec_init="geometric_median"), progress=False)
    assert torch.allclose(sae.b_dec, geometric_median(data), atol=1e-4)
    sae = train_sae(data, cfg_for("relu"), TrainConfig(**tcfg, b_dec_init="zeros"), progress=False)
    assert sae.b_dec.abs().max() < 1e-6


def test_normalisation_is_folded_into_the_weights():
    data = 30 * toy_data()
    sae = train_sae(data, cfg_for("topk", normalize_activations="expected_average_only_in"),
                    TrainConfig(n_steps=60, batch_size=256, lr=3e-3), progress=False)
    scale = sae.cfg.metadata["activation_scaling_factor"]
    assert scale == pytest.approx(math.sqrt(D_IN) / float(data.norm(dim=1).mean()), rel=0.05)
    assert sae.cfg.normalize_activations == "none"
    assert core_metrics(sae, data, progress=False)["explained_variance"] > 0.5  # works on raw activations


def test_auxk_gives_gradient_to_dead_latents():
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=K), seed=0)
    x = toy_data(200)
    with torch.no_grad():
        sae.b_enc[:32] = -50.0  # these latents can never win the top-k
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[:32] = True
    x_hat, codes, pre, x_c = sparse_forward(sae, x)
    assert not (codes.col[codes.acts > 0] < 32).any()
    mse = (x_hat - x).pow(2).sum(-1).mean()
    mse.backward(retain_graph=True)
    assert sae.W_enc.grad[:, :32].abs().max() == 0 and sae.W_dec.grad[:32].abs().max() == 0
    sae.zero_grad()
    (mse + auxk_loss_sparse(sae, pre, x_c, (x - x_hat).detach(), dead, 8)).backward()
    assert (sae.W_enc.grad[:, :32].abs().sum(0) > 0).all() and (sae.W_dec.grad[:32].abs().sum(1) > 0).all()


def test_trainer_applies_auxk_to_dead_latents():
    data = toy_data()

    def run(aux):
        sae = SAE(cfg_for("topk"), seed=0)
        with torch.no_grad():
            sae.b_enc[:32] = -50.0
        before = sae.W_dec[:32].clone()
        out = train_sae(data, cfg_for("topk"), TrainConfig(n_steps=12, batch_size=256, aux_k_coefficient=aux,
                                                            dead_tokens_threshold=512, log_every=4),
                        sae=sae, progress=False)
        return out, (out.W_dec[:32] - before).abs().max()

    without, moved_without = run(0.0)
    with_aux, moved_with = run(1 / 32)
    assert moved_without < 1e-6  # a dead latent gets no gradient from the reconstruction alone (renorm: rounding)
    assert moved_with > 1e-3
    assert "aux_k" in with_aux.training_log[-1] and without.training_log[-1]["dead_fraction"] >= 0.5


def test_gradient_clipping_bounds_the_step_and_is_recorded():
    data = toy_data(2000) * 50  # large activations: the first gradients are huge
    seen = []

    def spy(step, sae, metrics):
        seen.append(float(torch.cat([p.grad.flatten() for p in sae.parameters() if p.grad is not None]).norm()))

    sae = train_sae(data, cfg_for("relu"), TrainConfig(n_steps=3, batch_size=256, log_every=1), callback=spy,
                    progress=False)
    assert max(seen) <= 1.0 + 1e-4 and sae.cfg.metadata["training"]["max_grad_norm"] == 1.0
    unclipped = []
    train_sae(data, cfg_for("relu"), TrainConfig(n_steps=3, batch_size=256, max_grad_norm=None),
              callback=lambda step, sae, m: unclipped.append(
                  float(torch.cat([p.grad.flatten() for p in sae.parameters() if p.grad is not None]).norm())),
              progress=False)
    assert max(unclipped) > 1.0


def test_dead_threshold_scales_with_the_run():
    assert TrainConfig(n_tokens=2_000_000, batch_size=4096).dead_threshold == int(0.1 * 489 * 4096)
    assert TrainConfig(n_steps=3, batch_size=4096).dead_threshold == 4096  # at least one batch
    assert TrainConfig(n_tokens=10**10).dead_threshold == 10_000_000  # capped at sparsify's window
    assert TrainConfig(n_steps=5, dead_tokens_threshold=123).dead_threshold == 123
    with pytest.raises(ValueError, match="dead_fraction_of_run"):
        TrainConfig(n_steps=5, dead_fraction_of_run=0.0)


def test_auxk_revives_dead_latents_in_a_short_run_on_the_tiny_model(tiny):
    """With the default (run-scaled) dead window AuxK acts within 100 steps: it fires, fewer latents are dead along
    the run, and more dead latents fire again than without it.

    A quarter of the latents start with a low bias, so the run starts with dead latents; the data are the tiny
    model's activations on real sentences (diverse enough that a dead latent has something to learn).
    """
    texts = load_task("wordnet-topics").train.texts[:300]
    acts = extract(tiny, texts, "blocks.1.hook_resid_post", "none", progress=False).tensor
    cfg = SAEConfig(d_in=acts.shape[1], d_sae=256, architecture="topk", k=8)

    def run(aux):
        sae = SAE(cfg, seed=0)
        with torch.no_grad():
            sae.b_enc[:64] = -3.0
        out = train_sae(acts, cfg, TrainConfig(n_steps=100, batch_size=128, lr=3e-3, aux_k_coefficient=aux,
                                               log_every=10), sae=sae, progress=False)
        dead = [row["dead_fraction"] for row in out.training_log]
        return out.cfg.metadata["training"], sum(dead) / len(dead), out.training_log

    without, dead_without, _ = run(0.0)
    with_aux, dead_with, log = run(1 / 32)
    assert with_aux["dead_tokens_threshold"] == 1280  # 10% of the run's 100 x 128 tokens, not sparsify's 10M
    assert any("aux_k" in row for row in log)  # AuxK acted
    assert dead_with < dead_without - 0.01, (dead_with, dead_without)
    assert with_aux["n_revived"] > without["n_revived"], (with_aux["n_revived"], without["n_revived"])


def test_extra_loss_hook_side_tensors_and_extra_modules():
    """ClassifSAE's shape: a head on the first 20 latents trained jointly from per-row labels."""
    data = toy_data(2000)
    labels = (data[:, 0] > data[:, 0].median()).long()
    torch.manual_seed(0)
    head = torch.nn.Linear(20, 2)
    head_before = head.weight.detach().clone()
    seen = {}

    def classif_loss(sae, batch, out, step):
        assert torch.equal(batch.side["copy"], batch.acts)  # side rows aligned with activation rows
        seen["steps"] = step
        logits = head(out.latents[:, :20])
        z = out.latents
        tau_rows = max(1, int(0.1 * len(z)))
        allowed = z.topk(tau_rows, dim=0).values.sum(0)  # activation-rate loss: fire freely on 10% of a batch
        return {"ce": F.cross_entropy(logits, batch.side["labels"]),
                "activation_rate": 0.02 * (z.sum(0) - allowed).sum() / len(z)}

    sae = train_sae(data, cfg_for("topk", metadata={"variant": "classif"}),
                    TrainConfig(n_steps=40, batch_size=200, lr=3e-3, log_every=10),
                    side={"labels": labels, "copy": data}, extra_loss=classif_loss, extra_modules={"head": head},
                    progress=False)
    assert seen["steps"] == 39
    assert {"ce", "activation_rate", "mse"} <= set(sae.training_log[-1])
    assert sae.training_log[-1]["ce"] < sae.training_log[0]["ce"]
    assert not torch.equal(head.weight, head_before)  # the head was in the optimizer


def test_extra_loss_can_replace_the_reconstruction_term():
    data = toy_data(600)

    def normalised_mse(sae, batch, out, step):
        x = batch.acts
        per_item = (out.x_hat - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1).clamp_min(1e-6)
        return {"mse": per_item.mean()}

    sae = train_sae(data, cfg_for("topk"), TrainConfig(n_steps=3, batch_size=200, log_every=1),
                    extra_loss=normalised_mse, progress=False)
    entry = sae.training_log[-1]
    assert entry["loss"] == pytest.approx(entry["mse"]) and entry["mse"] < 50  # the built-in one would be larger


# ---- errors -------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    tcfg = TrainConfig(n_steps=2, batch_size=64)
    with pytest.raises(ValueError, match="the activations have d_in=8 but the SAE config says d_in=16"):
        train_sae(torch.randn(100, 8), cfg_for("topk"), tcfg, progress=False)
    bad = toy_data(1000)
    bad[700, 3] = float("nan")
    with pytest.raises(ValueError, match="chunk 1 of the activations contains NaN"):
        train_sae(TensorSource(bad, chunk_size=500), cfg_for("topk"), TrainConfig(n_steps=20, batch_size=64),
                  progress=False)
    with pytest.raises(ValueError, match="k must be between 1 and d_sae=64"):
        SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture="topk", k=65)
    with pytest.raises(ValueError, match="exactly one of n_steps and n_tokens"):
        TrainConfig(n_steps=10, n_tokens=1000)
    with pytest.raises(ValueError, match="b_dec_init"):
        TrainConfig(n_steps=10, b_dec_init="median")
    source = TensorSource(toy_data(300))
    source.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(ValueError, match="hook_name='blocks.0.hook_resid_post' but the SAE config says"):
        train_sae(source, cfg_for("topk", hook_name="blocks.1.hook_resid_post"), tcfg, progress=False)
    with pytest.raises(ValueError, match="does not match the config"):
        train_sae(toy_data(300), cfg_for("topk"), tcfg, sae=SAE(cfg_for("relu")), progress=False)


def test_source_metadata_fills_the_config():
    source = TensorSource(toy_data(300), metadata={"name": "toy", "fingerprint": "abc"})
    source.hook_name, source.model_name = "blocks.1.hook_resid_pre", "tiny"
    cfg = cfg_for("topk")
    sae = train_sae(source, cfg, TrainConfig(n_steps=2, batch_size=64), progress=False)
    assert (sae.cfg.hook_name, sae.cfg.model_name, sae.cfg.dataset["fingerprint"]) == (
        "blocks.1.hook_resid_pre", "tiny", "abc")
    assert cfg.hook_name is None  # the caller's config is left alone


# ---- checkpoints and resume ---------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def _resume_setup(arch: str, tmp_path, name: str, with_head: bool):
    data = toy_data(3000)
    source = TensorSource(data, side={"labels": (data[:, 1] > 0.5).long()}, chunk_size=500)
    tcfg = TrainConfig(n_steps=14, batch_size=256, lr=3e-3, checkpoint_every=4, checkpoint_dir=str(tmp_path / name),
                       log_every=2, dead_tokens_threshold=1024, window_chunks=2)
    torch.manual_seed(123)
    head = torch.nn.Linear(20, 2) if with_head else None

    def extra(sae, batch, out, step):  # uses the global RNG, so its state must be restored too
        noise = 0.01 * torch.randn(len(batch), 20)
        return {"ce": F.cross_entropy(head(out.latents[:, :20] + noise), batch.side["labels"])}

    kwargs = dict(extra_loss=extra, extra_modules={"head": head}) if with_head else {}
    return source, tcfg, head, kwargs


@pytest.mark.parametrize(("arch", "with_head"), [("topk", False), ("batchtopk", False), ("jumprelu", True)])
def test_resume_after_interruption_equals_uninterrupted_run(arch, with_head, tmp_path):
    source, tcfg, head_a, kwargs = _resume_setup(arch, tmp_path, "a", with_head)
    straight = train_sae(source, cfg_for(arch), tcfg, progress=False, **kwargs)

    source, tcfg, head_b, kwargs = _resume_setup(arch, tmp_path, "b", with_head)

    def stop_at_10(step, sae, metrics):
        if step == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sae(source, cfg_for(arch), tcfg, callback=stop_at_10, progress=False, **kwargs)
    assert [p.name for p in find_checkpoints(tmp_path / "b")] == ["step_000000008", "step_000000004"]
    if with_head:
        with torch.no_grad():
            head_b.weight.zero_()  # a fresh process would rebuild the head: the checkpoint must restore it
    torch.manual_seed(999)  # and a different global RNG state
    steps_run = []
    resumed = train_sae(source, cfg_for(arch), tcfg, resume=True, progress=False,
                        callback=lambda step, sae, metrics: steps_run.append(step), **kwargs)
    assert steps_run == list(range(9, 15))  # continued from the checkpoint at step 8

    for name, tensor in straight.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], tensor, atol=1e-6), name
    if with_head:
        assert torch.allclose(head_b.weight, head_a.weight, atol=1e-6)
    assert resumed.training_log == straight.training_log
    files = {p.suffix for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert files == {".safetensors", ".json"}  # no pickles


def test_corrupt_checkpoint_is_skipped_with_a_warning(tmp_path):
    source, tcfg, _, _ = _resume_setup("topk", tmp_path, "a", False)
    straight = train_sae(source, cfg_for("topk"), tcfg, progress=False)
    source, tcfg, _, _ = _resume_setup("topk", tmp_path, "b", False)

    def stop_at_9(step, sae, metrics):
        if step == 9:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sae(source, cfg_for("topk"), tcfg, callback=stop_at_9, progress=False)
    with open(tmp_path / "b" / "step_000000008" / "state.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"garbage")
    steps_run = []
    with pytest.warns(UserWarning, match="skipping corrupt or partial checkpoint .*step_000000008"):
        resumed = train_sae(source, cfg_for("topk"), tcfg, resume=True, progress=False,
                            callback=lambda step, sae, metrics: steps_run.append(step))
    assert steps_run[0] == 5
    assert torch.allclose(resumed.W_enc, straight.W_enc, atol=1e-6)  # continued from step 4 instead


def test_resume_refuses_a_different_sae(tmp_path):
    source, tcfg, _, _ = _resume_setup("topk", tmp_path, "a", False)
    tcfg.n_steps = 4
    train_sae(source, cfg_for("topk"), tcfg, progress=False)
    with pytest.raises(ValueError, match="was written for d_sae=64, not 128"):
        train_sae(source, SAEConfig(d_in=D_IN, d_sae=128, architecture="topk", k=K), tcfg, resume=True,
                  progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = train_sae(source, cfg_for("topk"), tcfg, resume=True, progress=False)  # already complete
    assert len(again.training_log) == 2


# ---- the caller's global state ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["set_grad_enabled(False)", "no_grad", "inference_mode"])
def test_training_works_whatever_the_callers_grad_mode_and_restores_it(mode):
    """Notebooks often start with torch.set_grad_enabled(False); training enables grad for itself, trains the same
    SAE as with grad on, and leaves the caller's setting (and random stream) as it was."""
    tcfg = TrainConfig(n_steps=20, batch_size=128, lr=3e-3)
    with torch.inference_mode():
        made_in_inference = toy_data(600)  # tensors made under inference_mode are inference tensors
    reference = train_sae(made_in_inference, cfg_for("topk"), tcfg, progress=False)
    torch.manual_seed(5)
    rng = torch.random.get_rng_state()
    previous = torch.is_grad_enabled()
    try:
        if mode == "set_grad_enabled(False)":
            torch.set_grad_enabled(False)
            sae = train_sae(made_in_inference, cfg_for("topk"), tcfg, progress=False)
            assert not torch.is_grad_enabled()
        elif mode == "no_grad":
            with torch.no_grad():
                sae = train_sae(made_in_inference, cfg_for("topk"), tcfg, progress=False)
                assert not torch.is_grad_enabled()
        else:
            with torch.inference_mode():
                sae = train_sae(made_in_inference, cfg_for("topk"), tcfg, progress=False)
                assert torch.is_inference_mode_enabled()
    finally:
        torch.set_grad_enabled(previous)
    assert torch.equal(torch.random.get_rng_state(), rng)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(sae.state_dict()[name], value, msg=name)


def test_fused_adam_updates_a_column_major_parameter_whatever_the_layout_of_its_grad_and_moments():
    """W_enc is column-major, while safetensors (checkpoint restore) and all-reduce (DDP) hand back row-major
    tensors; the fused kernel pairs tensors in memory order, so `train.adam` must re-lay them out first. Reference:
    torch's unfused Adam on contiguous copies."""
    from saelab.train import adam

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(6, 4, generator=generator)
    grads = [torch.randn(6, 4, generator=generator) for _ in range(3)]
    column_major = torch.nn.Parameter(start.t().contiguous().t())  # same values, transposed strides
    reference = torch.nn.Parameter(start.clone())
    fused, plain = adam([column_major], lr=0.1), torch.optim.Adam([reference], lr=0.1, foreach=False)
    assert fused.defaults["fused"] and column_major.stride() != reference.stride()
    for i, grad in enumerate(grads):
        column_major.grad, reference.grad = grad.clone(), grad.clone()  # row-major grad for a column-major param
        if i == 1:  # as a checkpoint restore leaves them: row-major moments
            for key in ("exp_avg", "exp_avg_sq"):
                fused.state[column_major][key] = fused.state[column_major][key].contiguous()
        fused.step()
        plain.step()
        torch.testing.assert_close(column_major.detach(), reference.detach())
