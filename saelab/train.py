"""One short trainer for every SAE architecture (in the spirit of dictionary_learning and sparsify).

    sae = train_sae(activations, SAEConfig(d_in=640, d_sae=4096, architecture="topk", k=32),
                    TrainConfig(n_tokens=10_000_000, batch_size=4096))

What one step does, for every architecture:

    x      = next batch of token activations (scaled to norm sqrt(d_in) if cfg asks for it)
    out    = sae.forward_train(x)                      # x_hat, latents, pre-activations
    loss   = ||x - x_hat||^2 (summed over d_in, mean over tokens)
           + sparsity penalty  (relu: L1, jumprelu: L0; topk/batchtopk: none, k does the job)
           + AuxK loss         (dead latents reconstruct the residual; Gao et al. 2024)
           + extra terms       (a hook, e.g. ClassifSAE's classifier head)
    remove from W_dec's gradient its component along each decoder row, Adam step, renormalise rows to 1

Every architecture has a sparse fast path on CPU (`train_sparse.train_forward`): only the active latents of each
token (k for TopK / BatchTopK, those past the ReLU or the JumpReLU threshold otherwise) carry gradient, so the
backward pass touches those rows of W_dec / columns of W_enc instead of all d_sae (what sparsify does for TopK with
its custom autograd function). ReLU and JumpReLU steps in which more than `train_sparse.MAX_SPARSE_DENSITY` of the
(token, latent) pairs are active (the first steps: half the latents fire at initialisation) take a dense route that
still skips the input gradient. The readable dense path (`SAE.forward_train`) computes the same numbers; tests check
that both give the same losses and gradients.

Data arrive as a tensor or a `TokenSource` (`train_data`; e.g. `activation_cache.ShardedTokens`, the shards of the
extraction cache, loaded lazily). Batches are a deterministic function of the seed and the step, and checkpoints
(`checkpoints`) store the data cursor, so `train_sae(..., resume=True)` continues an interrupted run and ends with
the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from saelab.checkpoints import find_checkpoints, prune_checkpoints, restore_latest, save_checkpoint
from saelab.config import cache_dir, config_from_dict
from saelab.io import sha256_text
from saelab.sae import SAE, BatchTopKSAE, SAEConfig, SAEOutput
from saelab.train_data import Batch, BatchStream, TokenSource, as_source, derive_seed
from saelab.train_sparse import (
    auxk_loss_dense,
    fast_selection_dtype,
    has_sparse_path,
    train_forward,
)

# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------

#: sparsify's fixed dead-latent window, the cap of the run-scaled one
MAX_DEAD_TOKENS = 10_000_000


@dataclass
class TrainConfig:
    """How to train. `lr=None` uses sparsify's rule 2e-4 / sqrt(d_sae / 16384); `warmup_steps=None` warms up over
    5% of the steps; the last `decay_fraction` of the steps decay the lr to `min_lr` (linear or cosine).

    AuxK (`aux_k_coefficient`, default 1/32 for topk/batchtopk and off otherwise) makes the top `k_aux` (default
    d_in // 2) dead latents of each token reconstruct the residual; a latent is dead when it has not fired for
    `dead_tokens_threshold` tokens. `None` scales it with the run: `dead_fraction_of_run` (10%) of its tokens, at
    least one batch and at most sparsify's 10M, so AuxK acts in short runs too (a fixed 10M never fires below 10M).
    """

    n_steps: int | None = None
    n_tokens: int | None = None
    batch_size: int = 4096
    lr: float | None = None
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0  # SAELens' clipping: without it Adam remembers the first steps' huge gradients
    warmup_steps: int | None = None
    decay: str = "linear"  # "linear" | "cosine" | "none"
    decay_fraction: float = 0.2
    min_lr: float = 0.0
    sparsity_warmup_steps: int = 0  # ramp the L1 / L0 coefficient up from 0 over these steps
    aux_k_coefficient: float | None = None
    k_aux: int | None = None
    dead_tokens_threshold: int | None = None
    dead_fraction_of_run: float = 0.1
    b_dec_init: str = "geometric_median"  # "geometric_median" | "mean" | "zeros"
    init_samples: int = 16384  # rows used to initialise b_dec and estimate the normalisation scale
    seed: int = 0
    window_chunks: int = 4
    sparse_kernels: bool = True  # the sparse fast path (CPU); turned off automatically with an extra loss
    # "bfloat16": on the fast path, the (token, latent) pairs are chosen from a bfloat16 encoder product (~3.5x
    # faster with AVX512-BF16 or AMX); every value in the loss stays float32, so only near-ties differ
    selection_dtype: str = "float32"
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    log_every: int = 50
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)
        if (self.n_steps is None) == (self.n_tokens is None):
            raise ValueError("set exactly one of n_steps and n_tokens")
        for name in ("n_steps", "n_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 1):
                raise ValueError(f"{name}={value!r}: it must be a positive integer")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.b_dec_init not in ("geometric_median", "mean", "zeros"):
            raise ValueError(f"b_dec_init must be 'geometric_median', 'mean' or 'zeros', got {self.b_dec_init!r}")
        if self.decay not in ("linear", "cosine", "none"):
            raise ValueError(f"decay must be 'linear', 'cosine' or 'none', got {self.decay!r}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if not 0 < self.dead_fraction_of_run <= 1:
            raise ValueError(f"dead_fraction_of_run must be in (0, 1], got {self.dead_fraction_of_run}")
        if self.dead_tokens_threshold is not None and self.dead_tokens_threshold < 1:
            raise ValueError(f"dead_tokens_threshold must be a positive number of tokens (or None), "
                             f"got {self.dead_tokens_threshold}")
        if self.selection_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"selection_dtype must be 'float32' or 'bfloat16', got {self.selection_dtype!r}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ValueError("checkpoint_every must be positive (or None for no checkpoints)")

    @property
    def total_steps(self) -> int:
        return self.n_steps if self.n_steps is not None else max(1, math.ceil(self.n_tokens / self.batch_size))

    @property
    def dead_threshold(self) -> int:
        """Tokens without firing after which a latent counts as dead (and AuxK trains it)."""
        if self.dead_tokens_threshold is not None:
            return self.dead_tokens_threshold
        run_tokens = self.total_steps * self.batch_size
        return int(min(MAX_DEAD_TOKENS, max(self.batch_size, self.dead_fraction_of_run * run_tokens)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, d)


class _Adam(torch.optim.Adam):
    """torch's Adam; the fused kernel pairs a parameter with its grad and moments in memory order, so those laid out
    unlike it (W_enc is column-major; safetensors and all-reduce give row-major) are first copied into its layout."""

    def step(self, closure=None):
        for p in (p for g in self.param_groups for p in g["params"]) if self.defaults.get("fused") else ():
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)
            state = self.state.get(p, {})
            for key, value in state.items():
                if value.shape == p.shape and value.dim() and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
        return super().step(closure)


def adam(params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam, fused (one kernel for all updates; about 3x the per-tensor loop on a CPU) where torch has the kernel."""
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
    return _Adam(params, lr=lr, betas=betas, fused=fusable or None)


def default_lr(d_sae: int) -> float:
    """sparsify's learning-rate rule: 2e-4 at 16k latents, scaled by 1/sqrt(d_sae / 16384)."""
    return 2e-4 / math.sqrt(d_sae / 16384)


def lr_at(step: int, base_lr: float, tcfg: TrainConfig) -> float:
    """The learning rate for `step` (0-based): linear warm-up, constant, then decay over the last steps."""
    n = tcfg.total_steps
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else max(1, n // 20)
    lr = base_lr
    decay_start = n - int(tcfg.decay_fraction * n)
    if tcfg.decay != "none" and step >= decay_start:
        progress = (step - decay_start) / max(1, n - decay_start)
        shape = 1 - progress if tcfg.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        lr = tcfg.min_lr + (base_lr - tcfg.min_lr) * shape
    if warmup > 0 and step < warmup:
        lr *= (step + 1) / warmup
    return lr


# ------------------------------------------------------------------------------------------------------------------
# Initialisation: b_dec and the input scale
# ------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def geometric_median(points: torch.Tensor, n_iter: int = 200, tol: float = 1e-7) -> torch.Tensor:
    """The point minimising the summed Euclidean distance to `points` [n, d].

    Weiszfeld's algorithm (Weiszfeld 1937; Vardi & Zhang 2000): repeatedly take the average of the points
    weighted by 1 / distance to the current estimate. Starts at the mean; distances are floored to avoid 1/0.
    Each iteration is two matrix-vector products (|x - y|^2 = |x|^2 - 2 x.y + |y|^2, in float64), not a pass
    that builds the [n, d] differences: 5x faster.
    """
    x = points.double()
    sq_norms = (x * x).sum(1)
    y = x.mean(0)
    for _ in range(n_iter):
        w = 1.0 / (sq_norms - 2 * (x @ y) + y @ y).clamp_min(0).sqrt().clamp_min(1e-12)
        y_next = (w @ x) / w.sum()
        if (y_next - y).norm() <= tol * (1 + y.norm()):
            y = y_next
            break
        y = y_next
    return y.to(points.dtype)


@torch.no_grad()
def _initialise(sae: SAE, source: TokenSource, tcfg: TrainConfig, device: torch.device) -> float:
    """Set b_dec (geometric median / mean / zeros of a sample) and return the input scale factor."""
    cfg, scale = sae.cfg, 1.0
    if cfg.normalize_activations == "none" and tcfg.b_dec_init == "zeros":
        sae.b_dec.zero_()
        return scale
    stream = BatchStream(source, tcfg.init_samples, seed=derive_seed(tcfg.seed, 7), window_chunks=tcfg.window_chunks)
    sample = stream.take(tcfg.init_samples, within_epoch=True).acts.to(device)
    if cfg.normalize_activations == "expected_average_only_in":
        # SAELens' rule: scale so that the average token has norm sqrt(d_in)
        scale = math.sqrt(cfg.d_in) / float(sample.norm(dim=1).mean().clamp_min(1e-12))
    sample = sample * scale
    if tcfg.b_dec_init == "geometric_median":
        sae.b_dec.copy_(geometric_median(sample))
    elif tcfg.b_dec_init == "mean":
        sae.b_dec.copy_(sample.mean(0))
    else:
        sae.b_dec.zero_()
    return scale


# ------------------------------------------------------------------------------------------------------------------
# Decoder constraint
# ------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def remove_parallel_gradient(W_dec: torch.Tensor, grad: torch.Tensor) -> None:
    """Project out of each decoder row's gradient its component along the (unit) row, in place, so the step moves
    along the sphere and the renormalisation after it undoes as little of Adam's step as possible."""
    grad -= (grad * W_dec).sum(dim=1, keepdim=True) * W_dec


@torch.no_grad()
def normalize_decoder(W_dec: torch.Tensor) -> None:
    W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------------------------

ExtraLoss = Callable[[SAE, Batch, SAEOutput, int], dict[str, torch.Tensor]]
Callback = Callable[[int, SAE, dict[str, float]], None]


def trains(fn: Callable) -> Callable:
    """Run a training function with autograd on and the caller's random state untouched, whatever the caller set.

    TransformerLens and ARENA notebooks often start with `torch.set_grad_enabled(False)`, and inference code runs
    under `torch.inference_mode()`: training must not depend on either. It seeds torch for itself, so it must not
    move the caller's random stream either. Both settings are as they were when it returns.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=cuda):
            return fn(*args, **kwargs)

    return wrapper


@trains
def train_sae(
    activations: torch.Tensor | TokenSource,
    cfg: SAEConfig,
    train_cfg: TrainConfig | None = None,
    *,
    side: dict[str, torch.Tensor] | None = None,
    sae: SAE | None = None,
    extra_loss: ExtraLoss | None = None,
    extra_modules: dict[str, nn.Module] | None = None,
    callback: Callback | None = None,
    resume: bool = False,
    progress: bool = True,
    sync: Any = None,
) -> SAE:
    """Train an SAE on token activations; return it (in eval mode) with `sae.training_log`.

    activations: a tensor [n_tokens, d_in] (with optional per-row `side` tensors, e.g. labels) or a TokenSource.
    sae: start from this SAE instead of a fresh one (its b_dec is then re-initialised only if b_dec_init asks).
    extra_loss(sae, batch, out, step) -> {name: scalar tensor}: terms added to the loss (a term named like a
        built-in one, e.g. "mse", replaces it). `batch.side` holds the side tensors, `out` the dense
        (x_hat, latents, pre_acts); with an extra loss the dense path is used.
    extra_modules: modules the extra loss uses (a classifier head): trained and checkpointed with the SAE.
    callback(step, sae, metrics) runs after every step (step = steps done); raising from it stops training.
    resume: continue from the newest valid checkpoint in `train_cfg.checkpoint_dir` (or the default folder).
    sync: a `saelab.distributed.GradSync` under torch.distributed: each rank trains on its rows of every batch and
        the gradients are averaged over ranks (`saelab.distributed.train_ddp` sets it up).
    """
    if not isinstance(cfg, SAEConfig):
        raise TypeError(f"cfg must be an SAEConfig, not a {type(cfg).__name__}: pass saelab.SAEConfig(d_in=..., "
                        "d_sae=..., architecture=...)")
    if train_cfg is not None and not isinstance(train_cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a TrainConfig, not a {type(train_cfg).__name__}: pass "
                        "saelab.TrainConfig(n_steps=...) or TrainConfig(n_tokens=...)")
    tcfg = train_cfg or TrainConfig(n_tokens=1_000_000)
    cfg = copy.deepcopy(cfg)  # the returned SAE's cfg records this run; the caller's object stays as it was
    source = as_source(activations, side)
    if source.d_in != cfg.d_in:
        raise ValueError(f"the activations have d_in={source.d_in} but the SAE config says d_in={cfg.d_in}: use "
                         f"SAEConfig(d_in={source.d_in}, ...), or the activations of the hook the SAE is for")
    for key in ("model_name", "hook_name"):
        theirs, ours = getattr(source, key), getattr(cfg, key)
        if theirs is not None and ours is not None and theirs != ours:
            raise ValueError(f"the activations come from {key}={theirs!r} but the SAE config says {ours!r}")
        if ours is None and theirs is not None:
            setattr(cfg, key, theirs)
    if not cfg.dataset and source.metadata:
        cfg.dataset = dict(source.metadata)
    extra_modules = dict(extra_modules or {})
    device = torch.device(tcfg.device)
    n_steps = tcfg.total_steps
    base_lr = tcfg.lr if tcfg.lr is not None else default_lr(cfg.d_sae)
    is_topk = cfg.architecture in ("topk", "batchtopk")
    aux_coef = tcfg.aux_k_coefficient if tcfg.aux_k_coefficient is not None else (1 / 32 if is_topk else 0.0)
    k_aux = tcfg.k_aux or max(1, cfg.d_in // 2)
    dead_threshold = tcfg.dead_threshold
    use_sparse = (tcfg.sparse_kernels and has_sparse_path(cfg.architecture) and extra_loss is None
                  and device.type == "cpu")
    pre_buffer = None  # the fast path's [batch, d_sae] pre-activations, reused from step to step
    selection = torch.bfloat16 if tcfg.selection_dtype == "bfloat16" else None

    if sae is None:
        sae = SAE(cfg, seed=tcfg.seed)
    else:
        if (sae.architecture, sae.cfg.d_in, sae.cfg.d_sae) != (cfg.architecture, cfg.d_in, cfg.d_sae):
            raise ValueError(f"the given SAE is {sae!r}, which does not match the config {cfg.architecture} "
                             f"d_in={cfg.d_in} d_sae={cfg.d_sae}")
        sae.cfg = cfg
    sae = sae.to(device).train()
    for p in sae.parameters():  # fp32 parameters (buffers such as BatchTopK's float64 threshold keep their dtype)
        p.data = p.data.float()
    for module in extra_modules.values():
        module.to(device).train()
    params = list(sae.parameters()) + [p for m in extra_modules.values() for p in m.parameters()]
    optimizer = adam(params, base_lr, tcfg.adam_betas)

    ckpt_dir = None
    if tcfg.checkpoint_every or resume:
        run_id = sha256_text(json.dumps(cfg.to_dict(), sort_keys=True, default=str),
                             json.dumps({k: v for k, v in tcfg.to_dict().items() if k != "checkpoint_dir"},
                                        sort_keys=True))[:16]
        ckpt_dir = Path(tcfg.checkpoint_dir) if tcfg.checkpoint_dir else cache_dir("checkpoints", run_id)

    # ---- start from the newest valid checkpoint, or afresh ----
    state = restore_latest(ckpt_dir, sae, extra_modules, optimizer, cfg, tcfg) if resume and ckpt_dir else None
    if resume and state is None:
        warnings.warn(f"resume=True but no valid checkpoint in {ckpt_dir}: starting from scratch", stacklevel=2)
    if state is None:
        if ckpt_dir is not None and find_checkpoints(ckpt_dir):
            warnings.warn(f"starting afresh: removing the older checkpoints in {ckpt_dir}", stacklevel=2)
            prune_checkpoints(ckpt_dir, keep=0)
        torch.manual_seed(tcfg.seed)
        state = {"step": 0, "cursor": None, "history": [], "scale": _initialise(sae, source, tcfg, device),
                 "tokens_since_fired": torch.zeros(cfg.d_sae, dtype=torch.long, device=device), "n_revived": 0}
    step, history, scale, n_revived = state["step"], state["history"], state["scale"], state["n_revived"]
    if sync is not None:
        sync.start(sae)  # every rank starts from rank 0's weights
    tokens_since_fired = state["tokens_since_fired"]

    stream = BatchStream(source, tcfg.batch_size, seed=tcfg.seed, window_chunks=tcfg.window_chunks,
                         cursor=state["cursor"])
    bar = tqdm(total=n_steps, initial=step, desc=f"train {cfg.architecture} SAE", disable=not progress, unit="step")

    def checkpoint() -> None:
        info = {"cursor": stream.cursor(), "history": history, "scale": scale, "n_revived": n_revived,
                "sae_config": cfg.to_dict(), "train_config": tcfg.to_dict()}
        save_checkpoint(ckpt_dir, step, sae, extra_modules, optimizer, info,
                        {"dead.tokens_since_fired": tokens_since_fired})
        prune_checkpoints(ckpt_dir, max(1, tcfg.keep_checkpoints))

    try:
        while step < n_steps:
            batch = stream.next()
            batch = (sync.local(batch) if sync is not None else batch).to(device)
            x = batch.acts * scale if scale != 1.0 else batch.acts
            batch.acts = x
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, base_lr, tcfg)
            sparsity_scale = min(1.0, (step + 1) / tcfg.sparsity_warmup_steps) if tcfg.sparsity_warmup_steps else 1.0
            dead = tokens_since_fired >= dead_threshold
            n_dead = int(dead.sum())

            # ---- forward and loss ----
            if use_sparse:
                fast = train_forward(sae, x, sparsity_scale, dead if aux_coef and n_dead else None, aux_coef, k_aux,
                                     pre_out=pre_buffer, selection_dtype=selection)
                x_hat, terms, pre_buffer = fast.x_hat, fast.terms, fast.pre
                fired_ids, n_active, kept = fast.fired_ids, fast.n_active, fast.kept
            else:
                out = sae.forward_train(x)
                x_hat = out.x_hat
                terms = {"mse": (x_hat - x).pow(2).sum(-1).mean()}
                terms.update(sae.sparsity_loss(out, sparsity_scale))
                if aux_coef and n_dead:
                    terms["aux_k"] = aux_coef * auxk_loss_dense(sae, out, (x - x_hat).detach(), dead, k_aux)
                if extra_loss is not None:
                    terms.update(extra_loss(sae, batch, out, step))
                active = out.latents.detach() > 0
                fired_ids, n_active = active.any(0).nonzero().squeeze(1), int(active.sum())
                kept = out.latents.detach()
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step}: lower the lr?")

            # ---- backward and constrained update ----
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if sync is not None:
                sync.grads(params)  # averaged over ranks: the gradient of the whole batch
            if sae.W_dec.grad is not None:
                remove_parallel_gradient(sae.W_dec.data, sae.W_dec.grad)
            if tcfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, tcfg.max_grad_norm)
            optimizer.step()
            normalize_decoder(sae.W_dec.data)
            with torch.no_grad():
                if cfg.architecture == "jumprelu":
                    sae.threshold.clamp_(min=0.0)  # a negative threshold would let negative pre-acts through
                if isinstance(sae, BatchTopKSAE):
                    sae.update_threshold(kept)
                if sync is not None:  # the latents that fired on any rank; BatchTopK's threshold averaged
                    fired_ids = sync.after_step(sae, fired_ids)
                if n_dead:
                    n_revived += int(dead[fired_ids].sum())  # dead latents that fire again (AuxK's job)
                tokens_since_fired += tcfg.batch_size  # the whole batch, on every rank
                tokens_since_fired[fired_ids] = 0
            step += 1

            # ---- bookkeeping ----
            metrics = {name: float(value.detach()) for name, value in terms.items()}
            metrics["loss"] = float(loss.detach())
            metrics["input_scale"] = scale  # the factor inputs are multiplied by (callbacks scoring a snapshot need it)
            if step % tcfg.log_every == 0 or step == n_steps:
                with torch.no_grad():
                    residual = (x - x_hat).pow(2).sum()
                    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
                metrics.update(step=step, tokens=step * tcfg.batch_size, l0=n_active / len(x),
                               explained_variance=float(1 - residual / total),
                               dead_fraction=float((tokens_since_fired >= dead_threshold).float().mean()),
                               revived=n_revived,
                               lr=optimizer.param_groups[0]["lr"])
                history.append(metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", L0=f"{metrics['l0']:.1f}",
                                EV=f"{metrics['explained_variance']:.3f}")
            bar.update(1)
            if ckpt_dir is not None and tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0:
                checkpoint()
            if callback is not None:
                callback(step, sae, metrics)
    finally:
        bar.close()

    # ---- fold the input scaling into the weights, record the recipe ----
    if cfg.normalize_activations == "expected_average_only_in":
        sae.fold_activation_norm_scaling_factor(scale)
    cfg.metadata.update({
        "training": {**tcfg.to_dict(), "lr": base_lr, "n_steps": n_steps, "aux_k_coefficient": aux_coef,
                     "k_aux": k_aux, "dead_tokens_threshold": dead_threshold, "n_revived": n_revived,
                     "checkpoint_dir": str(ckpt_dir) if ckpt_dir else None},
        "b_dec_init": tcfg.b_dec_init,
        "activation_scaling_factor": scale,
        "n_tokens_trained": n_steps * tcfg.batch_size,
        "final_metrics": history[-1] if history else {},
    })
    sae.training_log = history
    for module in extra_modules.values():
        module.eval()
    return sae.eval()


__all__ = [
    "TrainConfig", "adam", "default_lr", "fast_selection_dtype", "geometric_median", "lr_at", "normalize_decoder",
    "remove_parallel_gradient", "train_sae", "trains",
]
