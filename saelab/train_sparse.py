"""The training fast path for every architecture: autograd functions whose backward touches only the selected
(token, latent) pairs, the sparsity penalties on that path, and the AuxK loss on that path and on the dense one.

After the activation most latents of a token are zero: k of them for topk / batchtopk, those with pre > 0 for
relu, pre > threshold for jumprelu. Only those (token, latent) pairs carry gradient into W_dec, W_enc and b_enc,
so `sparse_forward` computes what `SAE.forward_train` computes, but its backward reads only those rows of W_dec
and columns of W_enc instead of all d_sae (what sparsify does for TopK with its custom autograd function):

    pre   = (x - b_dec) @ W_enc + b_enc           dense, without autograd (the one full-size product left)
    pairs = the selected (token, latent) pairs    topk / batchtopk: the kept ones; relu: pre > 0;
                                                  jumprelu: pre > threshold - bandwidth (a superset of the
                                                  active pairs and of those near the threshold, see below)
    v     = pre at the pairs, with a gradient     (_EncodePairs)
    z     = activation(v) at the pairs            relu for topk / batchtopk / relu, jumprelu's own function
    x_hat = sum over a token's pairs of z W_dec[latent] + b_dec      (_DecodePairs)

JumpReLU's straight-through threshold gradient also reads pairs that are not active, those within half a
bandwidth below the threshold: the pairs include them (with z = 0), and the dense path's own `JumpReLUFunction` and
`StepFunction` run on the pairs' values, so the threshold gets exactly the dense gradient (pairs left out are
neither active nor near the threshold: they add nothing). The L1 penalty reads only active latents (the others are 0).

Both backward products are gathers (`embedding_bag`): a token's pairs for the input side, a latent's pairs (the
same pairs in latent-major order, sorted once per step) for the weight gradients, which runs at a good fraction of
the CPU's dense matmul speed even at tens of percent density. The encoder's input gradient is never formed: x
needs none, and b_dec's is -W_enc @ (b_enc's gradient). Tests check that both paths give the same losses and
gradients. Used by `saelab.train.train_sae`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saelab.sae import SAE, JumpReLUFunction, SAEOutput, StepFunction

#: relu / jumprelu take the sparse path while at most this fraction of (token, latent) pairs is selected; above it
#: (in the first steps, before the sparsity penalty bites) the dense path is faster on CPU
MAX_SPARSE_DENSITY = 0.25


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def _bag_sum(table: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[i] = sum over p in offsets[i]:offsets[i+1] of weights[p] * table[index[p]]."""
    return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=weights, include_last_offset=True)


class Pairs:
    """Selected (token, latent) pairs in token-major (CSR) order: token r's latents are col[crow[r]:crow[r+1]],
    rows[p] is pair p's token. `by_latent()` gives the same pairs in latent-major order (computed once, shared by
    the encoder's and the decoder's backward)."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, rows: torch.Tensor, n_latents: int):
        self.crow, self.col, self.rows, self.n_latents = crow, col, rows, n_latents
        self._by_latent: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.crow) - 1

    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ccol, row, order): latent j's pairs are order[ccol[j]:ccol[j+1]], of tokens row[ccol[j]:ccol[j+1]]."""
        if self._by_latent is None:
            order = self.col.argsort(stable=True)
            ccol = torch.zeros(self.n_latents + 1, dtype=torch.long, device=self.col.device)
            ccol[1:] = torch.bincount(self.col, minlength=self.n_latents).cumsum(0)
            self._by_latent = ccol, self.rows[order], order
        return self._by_latent


class _EncodePairs(torch.autograd.Function):
    """v[p] = x_c[row] . W_enc[:, col] + b_enc[col] at the pairs p = (row, col), read from the dense no-grad `pre`
    (x_c = x - b_dec, without autograd). Backward, with G the [B, d_sae] matrix of the pairs' gradients:
    W_enc gets x_c^T G, b_enc the column sums of G, and b_dec (through x_c) -W_enc @ (those column sums), so the
    [B, d_in] input gradient G W_enc^T is never formed (x needs none)."""

    @staticmethod
    def forward(ctx, W_enc, b_enc, b_dec, x_c, pre, pairs):
        ctx.save_for_backward(W_enc, x_c)
        ctx.pairs = pairs
        return pre.reshape(-1)[pairs.rows * pre.shape[1] + pairs.col]

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
            grad_W = _bag_sum(x_c, row, ccol, grad[order]).t()
        return grad_W, grad_b if ctx.needs_input_grad[1] else None, grad_b_dec, None, None, None


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
            grad_W = _bag_sum(grad, row, ccol, z.detach()[order])
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
        dense[self.rows, self.col] = self.acts
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


def _select_batch_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, d_sae = pre.shape
    flat = F.relu(pre).reshape(-1).topk(k * B, sorted=False).indices.sort().values
    return _csr_from_flat(flat, B, d_sae)


def _select(sae: SAE, pre: torch.Tensor) -> Pairs:
    """The pairs that carry gradient for this architecture (see the module docstring)."""
    B, d_sae = pre.shape
    if sae.architecture == "topk":
        crow, col, rows, _ = _csr_from_topk(pre.topk(sae.cfg.k, dim=-1, sorted=False).indices)
    elif sae.architecture == "batchtopk":
        crow, col, rows = _select_batch_topk(pre, sae.cfg.k)
    else:
        if sae.architecture == "relu":
            mask = pre > 0
        elif sae.architecture == "jumprelu":  # active (pre > t) or near t (|pre - t| < bandwidth / 2), and a margin
            mask = pre > (sae.threshold.detach() - sae.cfg.jumprelu_bandwidth)
        else:
            raise ValueError(f"no sparse training path for architecture {sae.architecture!r}")
        crow, col, rows = _csr_from_flat(mask.view(-1).nonzero().squeeze(1), B, d_sae)
    return Pairs(crow, col, rows, d_sae)


def has_sparse_path(architecture: str) -> bool:
    return architecture in ("topk", "batchtopk", "relu", "jumprelu")


def sparse_forward(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, SparseCodes, torch.Tensor, torch.Tensor]:
    """The training forward on the sparse path: (x_hat, codes, dense pre [no grad], x_c [no grad]).

    x itself gets no gradient on this path (training needs none); b_dec gets its full gradient."""
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    with torch.no_grad():
        x_c = x - sae.b_dec if b_dec is not None else x
        pre = torch.addmm(sae.b_enc, x_c, sae.W_enc)
    pairs = _select(sae, pre)
    v = _EncodePairs.apply(sae.W_enc, sae.b_enc, b_dec, x_c, pre, pairs)
    if sae.architecture == "jumprelu":
        z = JumpReLUFunction.apply(v, sae.threshold.index_select(0, pairs.col), sae.cfg.jumprelu_bandwidth)
    else:
        z = F.relu(v)
    x_hat = _DecodePairs.apply(z, sae.W_dec, pairs) + sae.b_dec
    return x_hat, SparseCodes(pairs.crow, pairs.col, pairs.rows, z, sae.cfg.d_sae, v, pairs), pre, x_c


def sparse_sparsity_loss(sae: SAE, codes: SparseCodes, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """`SAE.sparsity_loss` on the sparse path: the same terms, summed over the selected pairs only (the others
    contribute 0 to the L1 and L0 values and to their gradients)."""
    n_tokens = len(codes.crow) - 1
    if sae.architecture == "relu":
        l1 = (codes.acts * sae.W_dec.norm(dim=1).index_select(0, codes.col)).sum() / n_tokens
        return {"l1": scale * sae.cfg.l1_coefficient * l1}
    if sae.architecture == "jumprelu":
        threshold = sae.threshold.index_select(0, codes.col)
        l0 = StepFunction.apply(codes.pre_acts, threshold, sae.cfg.jumprelu_bandwidth).sum() / n_tokens
        return {"l0": scale * sae.cfg.l0_coefficient * l0}
    return {}


def _auxk_select(pre: torch.Tensor, dead: torch.Tensor, k_aux: int) -> Pairs:
    """Each token's k_aux largest pre-activations among dead latents, as a CSR pattern."""
    dead_ids = dead.nonzero().squeeze(1)
    local = pre[:, dead_ids].topk(min(k_aux, len(dead_ids)), dim=-1, sorted=False).indices
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
    """AuxK on the sparse path, from `sparse_forward`'s dense `pre` and `x_c`."""
    pairs = _auxk_select(pre, dead, k_aux)
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    acts = _EncodePairs.apply(sae.W_enc, sae.b_enc, b_dec, x_c, pre, pairs)
    return auxk_loss(residual, _DecodePairs.apply(acts, sae.W_dec, pairs), int(dead.sum()), k_aux)


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
    "MAX_SPARSE_DENSITY", "Pairs", "SparseCodes", "auxk_loss", "auxk_loss_dense", "auxk_loss_sparse",
    "has_sparse_path", "sparse_forward", "sparse_sparsity_loss",
]
