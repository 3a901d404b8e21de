"""The training fast path for every architecture: autograd functions whose backward touches only the selected
(token, latent) pairs, the sparsity penalties on that path, and the AuxK loss on that path and on the dense one.

After the activation most latents of a token are zero: k of them for topk / batchtopk, those with pre > 0 for
relu, pre > threshold for jumprelu. Only those (token, latent) pairs carry gradient into W_dec, W_enc and b_enc,
so `sparse_forward` computes what `SAE.forward_train` computes, but its backward reads only those rows of W_dec
and columns of W_enc instead of all d_sae (what sparsify does for TopK with its custom autograd function):

    pre   = (x - b_dec) @ W_enc + b_enc           dense, without autograd (the one full-size product left)
    pairs = the selected (token, latent) pairs    topk / batchtopk: the kept ones; relu: pre > 0; jumprelu:
                                                  pre > threshold - 0.51 bandwidth (the active pairs, those
                                                  near the threshold, see below, and a thin margin)
    v     = pre at the pairs, with a gradient     (_EncodePairs)
    z     = activation(v) at the pairs            relu for topk / batchtopk / relu, jumprelu's own function
    x_hat = sum over a token's pairs of z W_dec[latent] + b_dec      (_DecodePairs)

JumpReLU's straight-through threshold gradient also reads pairs that are not active, those within half a
bandwidth below the threshold: the pairs include them (with z = 0), and the dense path's own `JumpReLUFunction` and
`StepFunction` run on the pairs' values, so the threshold gets exactly the dense gradient (pairs left out are
neither active nor near the threshold: they add nothing). The L1 penalty reads only active latents (the others
are 0).

Both backward products are gathers (`embedding_bag`): a token's pairs for the input side, a latent's pairs (the
same pairs in latent-major order, sorted once per step) for the weight gradients. The encoder's input gradient is
never formed: x needs none, and b_dec's is -W_enc @ (b_enc's gradient). When more than `MAX_SPARSE_DENSITY` of
the pairs are active (relu / jumprelu in their first steps), `train_forward` takes the dense route instead
(`dense_forward`: the readable maths from the same no-grad `pre`, still without the input gradient). AuxK reads
the dead latents' columns of `pre`. Tests check that every route gives the readable path's losses and gradients.
Used by `saelab.train.train_sae`.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saelab.sae import SAE, JumpReLUFunction, SAEOutput, StepFunction

#: relu / jumprelu take the sparse path while at most this fraction of (token, latent) pairs is selected; above it
#: (in the first steps, before the sparsity penalty bites) the dense path is faster on CPU
MAX_SPARSE_DENSITY = 0.2


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _bag_sum(table: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[i] = sum over p in offsets[i]:offsets[i+1] of weights[p] * table[index[p]]."""
    return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True)


class Pairs:
    """Selected (token, latent) pairs in token-major (CSR) order: token r's latents are col[crow[r]:crow[r+1]],
    rows[p] is pair p's token (and `flat` = rows * n_latents + col, its place in a [B, d_sae] matrix).
    `by_latent()` gives the same pairs in latent-major order (computed once, shared by the encoder's and the
    decoder's backward)."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, rows: torch.Tensor, n_latents: int,
                 flat: torch.Tensor | None = None):
        self.crow, self.col, self.rows, self.n_latents = crow, col, rows, n_latents
        self.flat = flat if flat is not None else rows * n_latents + col
        self._by_latent: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.crow) - 1

    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ccol, row, order): latent j's pairs are order[ccol[j]:ccol[j+1]], of tokens row[ccol[j]:ccol[j+1]]."""
        if self._by_latent is None:
            order = self.col.to(torch.int32).argsort(stable=True)  # a narrower key sorts faster
            ccol = torch.zeros(self.n_latents + 1, dtype=torch.long, device=self.col.device)
            ccol[1:] = torch.bincount(self.col, minlength=self.n_latents).cumsum(0)
            self._by_latent = ccol, self.rows.index_select(0, order), order
        return self._by_latent


def _pair_values(pre: torch.Tensor, x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                 pairs: Pairs) -> torch.Tensor:
    """pre at the pairs, in float32: read from `pre` when it is float32, recomputed from x_c and the weights when
    `pre` was computed in a lower precision only to choose the pairs (`selection_dtype`)."""
    if pre.dtype == x_c.dtype:
        return pre.reshape(-1).index_select(0, pairs.flat)
    pattern = _csr(pairs.crow, pairs.col, torch.zeros(len(pairs.col), dtype=x_c.dtype, device=x_c.device),
                   (pairs.n_tokens, pairs.n_latents))
    return torch.sparse.sampled_addmm(pattern, x_c, W_enc, beta=0.0).values() + b_enc.index_select(0, pairs.col)


def _columns(pre: torch.Tensor, x_c: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
             ids: torch.Tensor) -> torch.Tensor:
    """pre[:, ids] in float32 (recomputed when `pre` is a lower-precision selection copy)."""
    if pre.dtype == x_c.dtype:
        return pre.index_select(1, ids)
    return torch.addmm(b_enc.index_select(0, ids), x_c, W_enc.index_select(1, ids))


class _EncodePairs(torch.autograd.Function):
    """v[p] = x_c[row] . W_enc[:, col] + b_enc[col] at the pairs p = (row, col), given their no-grad values
    (`_pair_values`; x_c = x - b_dec, without autograd). Backward, with G the [B, d_sae] matrix of the pairs'
    gradients: W_enc gets x_c^T G, b_enc the column sums of G, and b_dec (through x_c) -W_enc @ (those column
    sums), so the [B, d_in] input gradient G W_enc^T is never formed (x needs none)."""

    @staticmethod
    def forward(ctx, W_enc, b_enc, b_dec, x_c, values, pairs):
        ctx.save_for_backward(W_enc, x_c)
        ctx.pairs = pairs
        return values

    @staticmethod
    def backward(ctx, grad):
        W_enc, x_c = ctx.saved_tensors
        pairs: Pairs = ctx.pairs
        grad = grad.contiguous()
        grad_W = grad_b = grad_b_dec = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_b = torch.zeros(pairs.n_latents, dtype=grad.dtype, device=grad.device).index_add_(0, pairs.col, grad)
        if ctx.needs_input_grad[2]:
            grad_b_dec = -(W_enc @ grad_b)
        if ctx.needs_input_grad[0]:
            ccol, row, order = pairs.by_latent()
            grad_W = _bag_sum(x_c, row, ccol, grad.index_select(0, order)).t()
        return grad_W, grad_b if ctx.needs_input_grad[1] else None, grad_b_dec, None, None, None


class _EncodeColumns(torch.autograd.Function):
    """pre[:, ids] (all of pre when ids is None) with a gradient, given the no-grad `pre_cols` = pre[:, ids]:
    `_EncodePairs` for whole columns. W_enc[:, ids] gets x_c^T G, b_enc[ids] the column sums of G, b_dec
    -W_enc[:, ids] @ those; as there, the input gradient G W_enc^T is never formed."""

    @staticmethod
    def forward(ctx, W_enc, b_enc, b_dec, x_c, pre_cols, ids):
        ctx.save_for_backward(W_enc, x_c, ids)
        return pre_cols

    @staticmethod
    def backward(ctx, grad):
        W_enc, x_c, ids = ctx.saved_tensors
        grad_W = grad_b = grad_b_dec = None
        col_sums = grad.sum(0)
        if ctx.needs_input_grad[0]:
            if ids is None:
                grad_W = (grad.t() @ x_c).t()  # in W_enc's own (column-major) layout
            else:
                grad_W = torch.zeros_like(W_enc)
                grad_W[:, ids] = x_c.t() @ grad
        if ctx.needs_input_grad[1]:
            grad_b = col_sums if ids is None else torch.zeros(
                W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_copy_(0, ids, col_sums)
        if ctx.needs_input_grad[2]:
            grad_b_dec = -(W_enc @ col_sums if ids is None else W_enc[:, ids] @ col_sums)
        return grad_W, grad_b, grad_b_dec, None, None, None


class _DecodePairs(torch.autograd.Function):
    """x_hat[row] = sum over the row's pairs of z[p] * W_dec[col] (no bias). Backward: z gets <grad[row],
    W_dec[col]> at the pairs only, W_dec gets G^T grad with G the [B, d_sae] matrix of z."""

    @staticmethod
    def forward(ctx, z, W_dec, pairs):
        ctx.save_for_backward(z, W_dec)
        ctx.pairs = pairs
        return _bag_sum(W_dec, pairs.col, pairs.crow, z)

    @staticmethod
    def backward(ctx, grad):
        z, W_dec = ctx.saved_tensors
        pairs: Pairs = ctx.pairs
        grad = grad.contiguous()
        grad_z = grad_W = None
        if ctx.needs_input_grad[0]:
            Z = _csr(pairs.crow, pairs.col, z.detach(), (pairs.n_tokens, pairs.n_latents))
            grad_z = torch.sparse.sampled_addmm(Z, grad, W_dec.t(), beta=0.0).values()
        if ctx.needs_input_grad[1]:
            ccol, row, order = pairs.by_latent()
            grad_W = _bag_sum(grad, row, ccol, z.detach().index_select(0, order))
        return grad_z, grad_W, None


@dataclass
class SparseCodes:
    """Latents in compressed-row form: row r's selected latents are col[crow[r]:crow[r+1]] with values acts[...]
    (for jumprelu some selected values are 0: pairs just below the threshold); `pre_acts` holds the selected
    pre-activations (with their gradient), `pairs` the pattern."""

    crow: torch.Tensor
    col: torch.Tensor
    rows: torch.Tensor
    acts: torch.Tensor
    n_latents: int
    pre_acts: torch.Tensor | None = None
    pairs: Pairs | None = None

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(len(self.crow) - 1, self.n_latents, dtype=self.acts.dtype, device=self.acts.device)
        dense.view(-1)[self.rows * self.n_latents + self.col] = self.acts.detach()
        return dense

    @property
    def density(self) -> float:
        """The fraction of all (token, latent) pairs that were selected."""
        return len(self.col) / max(1, (len(self.crow) - 1) * self.n_latents)


def _csr_from_topk(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted per-row indices [B, k] -> (crow, col, rows, order) of a CSR pattern."""
    indices, order = indices.sort(dim=-1)
    B, k = indices.shape
    crow = torch.arange(0, B * k + 1, k, device=indices.device)
    rows = torch.arange(B, device=indices.device).repeat_interleave(k)
    return crow, indices.reshape(-1), rows, order


def _csr_from_flat(flat: torch.Tensor, n_rows: int, n_cols: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted flat indices into an [n_rows, n_cols] matrix -> (crow, col, rows)."""
    rows, col = flat // n_cols, flat % n_cols
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=flat.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow, col, rows


#: BatchTopK ranks only the pre-activations above this share of its running threshold (an EMA of the batches' k*B-th
#: value): about 1.5 k*B of the B * d_sae, the same pairs (up to ties) at a fraction of the cost of ranking them all
BATCH_TOPK_FLOOR = 0.8


def _select_batch_topk(pre: torch.Tensor, k: int, floor: float = 0.0) -> tuple[torch.Tensor, ...]:
    """The batch's k * B largest positive pre-activations as a CSR pattern. With a `floor` > 0 that at least k * B
    values exceed, only those are ranked (exact: every one of the k * B largest exceeds it); else all are."""
    B, d_sae = pre.shape
    flat, n = pre.reshape(-1), k * B
    if floor > 0:
        candidates = (flat > floor).nonzero().squeeze(1)
        if len(candidates) >= n:
            top = flat.index_select(0, candidates).topk(n, sorted=False).indices
            return _csr_from_flat(candidates.index_select(0, top).sort().values, B, d_sae)
    return _csr_from_flat(F.relu(flat).topk(n, sorted=False).indices.sort().values, B, d_sae)


def _select(sae: SAE, pre: torch.Tensor, max_density: float = 1.0) -> Pairs | None:
    """The pairs that carry gradient for this architecture (see the module docstring); None for relu / jumprelu
    when they are more than `max_density` of all pairs (the dense computation is then faster)."""
    B, d_sae = pre.shape
    if sae.architecture == "topk":
        crow, col, rows, _ = _csr_from_topk(pre.topk(sae.cfg.k, dim=-1, sorted=False).indices)
        return Pairs(crow, col, rows, d_sae)
    if sae.architecture == "batchtopk":
        floor = BATCH_TOPK_FLOOR * float(sae.topk_threshold)  # negative (no floor) until the first update
        return Pairs(*_select_batch_topk(pre, sae.cfg.k, floor), d_sae)
    if sae.architecture == "relu":
        mask = pre > 0
    elif sae.architecture == "jumprelu":  # active (pre > t) or near t (|pre - t| < bandwidth / 2), with a margin
        mask = pre > (sae.threshold.detach() - 0.51 * sae.cfg.jumprelu_bandwidth)  # far wider than rounding
    else:
        raise ValueError(f"no sparse training path for architecture {sae.architecture!r}")
    if max_density < 1.0 and int(mask.sum()) > max_density * mask.numel():
        return None
    flat = mask.view(-1).nonzero().squeeze(1)
    return Pairs(*_csr_from_flat(flat, B, d_sae), d_sae, flat)


@functools.lru_cache(maxsize=1)
def fast_selection_dtype() -> str:
    """"bfloat16" when this CPU multiplies bfloat16 matrices at least 1.5x faster than float32 (AVX512-BF16, AMX,
    recent Arm), else "float32": what the zoo passes as `TrainConfig.selection_dtype`. Measured once per process
    on a small encoder-like product (milliseconds; small, so that a CPU that emulates bfloat16 slowly is not
    kept long)."""
    a, b = torch.randn(512, 640), torch.randn(640, 2048)

    def seconds(dtype: torch.dtype) -> float:
        x, w = a.to(dtype), b.to(dtype)
        x @ w  # warm-up
        started = time.perf_counter()
        for _ in range(3):
            x @ w
        return time.perf_counter() - started

    return "bfloat16" if seconds(torch.float32) >= 1.5 * seconds(torch.bfloat16) else "float32"


def has_sparse_path(architecture: str) -> bool:
    return architecture in ("topk", "batchtopk", "relu", "jumprelu")


def _encode_no_grad(sae: SAE, x: torch.Tensor, pre_out: torch.Tensor | None,
                    selection_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre, x_c) without autograd; `pre_out`, a [B, d_sae] buffer reused from step to step, saves allocating (and
    page-faulting) the large `pre` each step. With a `selection_dtype` (bfloat16) `pre` is computed in it, to
    choose the pairs; their values are then recomputed in float32 (`_pair_values`)."""
    with torch.no_grad():
        x_c = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
        dtype = x_c.dtype if selection_dtype is None else selection_dtype
        weights = (sae.b_enc, sae.W_enc) if dtype == x_c.dtype else (sae.b_enc.to(dtype), sae.W_enc.to(dtype))
        inputs = x_c if dtype == x_c.dtype else x_c.to(dtype)
        if pre_out is not None and pre_out.shape == (len(x), sae.cfg.d_sae) and pre_out.dtype == dtype:
            return torch.addmm(weights[0], inputs, weights[1], out=pre_out), x_c
        return torch.addmm(weights[0], inputs, weights[1]), x_c


def _forward_pairs(sae: SAE, pairs: Pairs, pre: torch.Tensor, x_c: torch.Tensor) -> tuple[torch.Tensor, SparseCodes]:
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    with torch.no_grad():
        values = _pair_values(pre, x_c, sae.W_enc, sae.b_enc, pairs)
    v = _EncodePairs.apply(sae.W_enc, sae.b_enc, b_dec, x_c, values, pairs)
    if sae.architecture == "jumprelu" and len(v):  # (no pairs: nothing is active or near a threshold)
        z = JumpReLUFunction.apply(v, sae.threshold.index_select(0, pairs.col), sae.cfg.jumprelu_bandwidth)
    else:
        z = F.relu(v)
    x_hat = _DecodePairs.apply(z, sae.W_dec, pairs) + sae.b_dec
    return x_hat, SparseCodes(pairs.crow, pairs.col, pairs.rows, z, sae.cfg.d_sae, v, pairs)


def sparse_forward(sae: SAE, x: torch.Tensor, pre_out: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, SparseCodes, torch.Tensor, torch.Tensor]:
    """The training forward on the sparse path: (x_hat, codes, dense pre [no grad], x_c [no grad]).

    x itself gets no gradient on this path (training needs none); b_dec gets its full gradient."""
    pre, x_c = _encode_no_grad(sae, x, pre_out)
    x_hat, codes = _forward_pairs(sae, _select(sae, pre), pre, x_c)
    return x_hat, codes, pre, x_c


def dense_forward(sae: SAE, x: torch.Tensor, pre_out: torch.Tensor | None = None,
                  ) -> tuple[SAEOutput, torch.Tensor, torch.Tensor]:
    """`SAE.forward_train` from a no-grad `pre`, whose backward skips the input gradient: (out, pre, x_c).
    One [B, d_in] x [d_in, d_sae] product fewer than the readable path (5 instead of 6), the same numbers."""
    pre, x_c = _encode_no_grad(sae, x, pre_out)
    return _dense_from_pre(sae, pre, x_c), pre, x_c


def _dense_from_pre(sae: SAE, pre: torch.Tensor, x_c: torch.Tensor) -> SAEOutput:
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    pre_acts = _EncodeColumns.apply(sae.W_enc, sae.b_enc, b_dec, x_c, pre, None)
    z = sae.train_activation(pre_acts)
    return SAEOutput(sae.decode(z), z, pre_acts)


@dataclass
class TrainForward:
    """What one training step's forward gives the trainer (`train_forward`)."""

    x_hat: torch.Tensor
    terms: dict[str, torch.Tensor]  # loss terms: mse, the sparsity penalty, aux_k
    fired_ids: torch.Tensor  # latents active for at least one token, each once
    n_active: int  # active (token, latent) pairs
    kept: torch.Tensor  # the active latents' values (BatchTopK's threshold reads their minimum)
    pre: torch.Tensor  # the dense no-grad pre-activations: a buffer the next step can reuse
    sparse: bool  # whether the step took the (token, latent) pairs route


def train_forward(sae: SAE, x: torch.Tensor, sparsity_scale: float = 1.0, dead: torch.Tensor | None = None,
                  aux_coef: float = 0.0, k_aux: int = 1, pre_out: torch.Tensor | None = None,
                  max_density: float | None = None, selection_dtype: torch.dtype | None = None) -> TrainForward:
    """The forward of one training step on the fast path: the loss terms `train_sae`'s dense branch computes
    (mse, the sparsity penalty, AuxK when `dead` latents are given), and the bookkeeping it needs.

    TopK / BatchTopK always take the pairs route; relu / jumprelu take it when at most `max_density` (default
    `MAX_SPARSE_DENSITY`) of the (token, latent) pairs are selected, and `dense_forward`'s route otherwise.
    `selection_dtype`: choose the pairs from pre-activations computed in this dtype (bfloat16 is ~3.5x faster on
    CPUs with AVX512-BF16 or AMX); every value that enters the loss is recomputed in float32, so only near-ties
    choose differently (TopK's k-th latent; for relu a pre-activation within rounding of 0, which adds about 0 to
    the codes; JumpReLU's pairs carry a margin of half a bandwidth around the threshold)."""
    pre, x_c = _encode_no_grad(sae, x, pre_out, selection_dtype)
    pairs = _select(sae, pre, MAX_SPARSE_DENSITY if max_density is None else max_density)
    if pairs is None and pre.dtype != x_c.dtype:  # the dense route reads every value: compute them all in full
        pre = _encode_no_grad(sae, x, None)[0]
    if pairs is not None:
        x_hat, codes = _forward_pairs(sae, pairs, pre, x_c)
        terms = {"mse": (x_hat - x).pow(2).sum(-1).mean(), **sparse_sparsity_loss(sae, codes, sparsity_scale)}
        fired = codes.acts.detach() > 0
        kept = codes.acts.detach()
        fired_ids = torch.bincount(codes.col[fired], minlength=sae.cfg.d_sae).nonzero().squeeze(1)
    else:
        out = _dense_from_pre(sae, pre, x_c)
        x_hat = out.x_hat
        terms = {"mse": (x_hat - x).pow(2).sum(-1).mean(), **sae.sparsity_loss(out, sparsity_scale)}
        fired = out.latents.detach() > 0
        kept = out.latents.detach()
        fired_ids = fired.any(0).nonzero().squeeze(1)
    if aux_coef and dead is not None and bool(dead.any()):
        k_aux = max(1, k_aux)
        terms["aux_k"] = aux_coef * auxk_loss_sparse(sae, pre, x_c, (x - x_hat).detach(), dead, k_aux)
    return TrainForward(x_hat, terms, fired_ids, int(fired.sum()), kept, pre, pairs is not None)


def sparse_sparsity_loss(sae: SAE, codes: SparseCodes, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """`SAE.sparsity_loss` on the sparse path: the same terms, summed over the selected pairs only (the others
    contribute 0 to the L1 and L0 values and to their gradients)."""
    n_tokens = len(codes.crow) - 1
    if sae.architecture == "relu":
        l1 = (codes.acts * sae.W_dec.norm(dim=1).index_select(0, codes.col)).sum() / n_tokens
        return {"l1": scale * sae.cfg.l1_coefficient * l1}
    if sae.architecture == "jumprelu":
        threshold = sae.threshold.index_select(0, codes.col)
        if len(codes.col):
            l0 = StepFunction.apply(codes.pre_acts, threshold, sae.cfg.jumprelu_bandwidth).sum() / n_tokens
        else:  # nothing active or near a threshold: L0 0, no gradient
            l0 = threshold.sum()
        return {"l0": scale * sae.cfg.l0_coefficient * l0}
    return {}


#: AuxK on the dead latents' columns as dense matrices while each token keeps at least this fraction of the dead
#: latents (k_aux of n_dead), as sparse pairs below it
AUXK_DENSE_FRACTION = 0.3


def _auxk_select(pre: torch.Tensor, dead_ids: torch.Tensor, k_aux: int) -> Pairs:
    """Each token's k_aux largest pre-activations among dead latents, as a CSR pattern."""
    local = pre.index_select(1, dead_ids).topk(min(k_aux, len(dead_ids)), dim=-1, sorted=False).indices
    crow, col, rows, _ = _csr_from_topk(dead_ids[local])
    return Pairs(crow, col, rows, pre.shape[1])


def auxk_loss(residual: torch.Tensor, residual_hat: torch.Tensor, n_dead: int, k_aux: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024): how well the dead latents reconstruct the live latents' residual, normalised by the
    residual's variance and scaled down while few latents are dead (as sparsify and dictionary_learning do)."""
    scale = min(n_dead / k_aux, 1.0)
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return scale * (residual_hat - residual).pow(2).sum(-1).mean() / variance


def auxk_loss_sparse(sae: SAE, pre: torch.Tensor, x_c: torch.Tensor, residual: torch.Tensor,
                     dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """AuxK on the sparse path, from `sparse_forward`'s dense `pre` and `x_c`: the same selection and loss as
    `auxk_loss_dense`, computed on the dead latents' columns only (dense while few latents are dead and each token
    keeps most of them, as (token, latent) pairs otherwise)."""
    dead_ids = dead.nonzero().squeeze(1)
    n_dead = len(dead_ids)
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    if min(k_aux, n_dead) >= AUXK_DENSE_FRACTION * n_dead:
        with torch.no_grad():
            pre_cols = _columns(pre, x_c, sae.W_enc, sae.b_enc, dead_ids)
        cols = _EncodeColumns.apply(sae.W_enc, sae.b_enc, b_dec, x_c, pre_cols, dead_ids)
        if k_aux < n_dead:  # keep each token's k_aux largest (as the dense path's topk + scatter)
            keep = torch.zeros_like(pre_cols, dtype=torch.bool)
            keep.scatter_(-1, pre_cols.topk(k_aux, dim=-1, sorted=False).indices, True)
            cols = cols * keep
        residual_hat = cols @ sae.W_dec.index_select(0, dead_ids)
    else:
        pairs = _auxk_select(pre, dead_ids, k_aux)
        with torch.no_grad():
            values = _pair_values(pre, x_c, sae.W_enc, sae.b_enc, pairs)
        acts = _EncodePairs.apply(sae.W_enc, sae.b_enc, b_dec, x_c, values, pairs)
        residual_hat = _DecodePairs.apply(acts, sae.W_dec, pairs)
    return auxk_loss(residual, residual_hat, n_dead, k_aux)


def auxk_loss_dense(sae: SAE, out: SAEOutput, residual: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """The readable AuxK: each token's top-k_aux pre-activations among dead latents, decoded without b_dec.

    The pre-activations are used as they are, without a relu (as in SAELens): a latent whose pre-activations
    are all negative still gets a gradient that can bring it back."""
    n_dead = int(dead.sum())
    masked = torch.where(dead, out.pre_acts, torch.full_like(out.pre_acts, -torch.inf))
    values, indices = masked.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    aux_latents = torch.zeros_like(out.pre_acts).scatter(-1, indices, values)
    return auxk_loss(residual, aux_latents @ sae.W_dec, n_dead, k_aux)


__all__ = [
    "AUXK_DENSE_FRACTION", "MAX_SPARSE_DENSITY", "Pairs", "SparseCodes", "auxk_loss", "auxk_loss_dense",
    "auxk_loss_sparse", "TrainForward", "dense_forward", "fast_selection_dtype", "has_sparse_path", "sparse_forward",
    "sparse_sparsity_loss", "train_forward",
]
