"""The TopK / BatchTopK training fast path: autograd functions whose backward touches only the selected
(token, latent) pairs, and the AuxK loss on that path and on the dense one.

`sparse_forward` computes what `SAE.forward_train` computes for topk / batchtopk, but its backward reads k rows of
W_dec and k columns of W_enc per token instead of all d_sae (what sparsify does with its custom autograd
function); a test checks that both paths give the same gradients. Used by `saelab.train.train_sae`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saelab.sae import SAE, SAEOutput


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class _GatherPreActs(torch.autograd.Function):
    """pre[row, col] = x_c[row] . W_enc[:, col] + b_enc[col] for the selected pairs, given the dense `pre` from a
    no-grad forward. The backward needs only those pairs: an [B, d_sae] sparse matrix of gradients times x_c or
    W_enc, instead of the two dense [B, d_sae] products of an ordinary matmul backward."""

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, pre, crow, col, rows):
        ctx.save_for_backward(x_c, W_enc, crow, col)
        return pre.reshape(-1)[rows * pre.shape[1] + col]

    @staticmethod
    def backward(ctx, grad):
        x_c, W_enc, crow, col = ctx.saved_tensors
        G = _csr(crow, col, grad, (x_c.shape[0], W_enc.shape[1]))
        grad_x = G @ W_enc.t().contiguous() if ctx.needs_input_grad[0] else None
        grad_W = (G.t() @ x_c).t() if ctx.needs_input_grad[1] else None
        grad_b = None
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(W_enc.shape[1], dtype=grad.dtype, device=grad.device).index_add_(0, col, grad)
        return grad_x, grad_W, grad_b, None, None, None, None


class _SparseDecode(torch.autograd.Function):
    """x_hat[row] = sum over the row's selected latents of acts * W_dec[col] (no bias)."""

    @staticmethod
    def forward(ctx, acts, crow, col, W_dec):
        ctx.save_for_backward(acts, crow, col, W_dec)
        return F.embedding_bag(col, W_dec, crow, mode="sum", per_sample_weights=acts, include_last_offset=True)

    @staticmethod
    def backward(ctx, grad):
        acts, crow, col, W_dec = ctx.saved_tensors
        A = _csr(crow, col, acts, (len(crow) - 1, W_dec.shape[0]))
        grad_acts = grad_W = None
        if ctx.needs_input_grad[0]:  # <grad[row], W_dec[col]> only at the selected pairs
            grad_acts = torch.sparse.sampled_addmm(A, grad, W_dec.t(), beta=0.0).values()
        if ctx.needs_input_grad[3]:
            grad_W = A.t() @ grad
        return grad_acts, None, None, grad_W


@dataclass
class SparseCodes:
    """Latents in compressed-row form: row r's active latents are col[crow[r]:crow[r+1]] with values acts[...]."""

    crow: torch.Tensor
    col: torch.Tensor
    rows: torch.Tensor
    acts: torch.Tensor
    n_latents: int

    def to_dense(self) -> torch.Tensor:
        dense = torch.zeros(len(self.crow) - 1, self.n_latents, dtype=self.acts.dtype, device=self.acts.device)
        dense[self.rows, self.col] = self.acts
        return dense


def _csr_from_topk(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted per-row indices [B, k] -> (crow, col, rows, order) of a CSR pattern."""
    indices, order = indices.sort(dim=-1)
    B, k = indices.shape
    crow = torch.arange(0, B * k + 1, k, device=indices.device)
    rows = torch.arange(B, device=indices.device).repeat_interleave(k)
    return crow, indices.reshape(-1), rows, order


def _select_batch_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, d_sae = pre.shape
    flat = F.relu(pre).reshape(-1).topk(k * B, sorted=False).indices.sort().values
    rows, col = flat // d_sae, flat % d_sae
    crow = torch.zeros(B + 1, dtype=torch.long, device=pre.device)
    crow[1:] = torch.bincount(rows, minlength=B).cumsum(0)
    return crow, col, rows


def sparse_forward(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, SparseCodes, torch.Tensor, torch.Tensor]:
    """The TopK / BatchTopK training forward on the sparse path: (x_hat, codes, dense pre [no grad], x_c)."""
    x_c = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    with torch.no_grad():
        pre = torch.addmm(sae.b_enc, x_c, sae.W_enc)
    if sae.architecture == "topk":
        crow, col, rows, _ = _csr_from_topk(pre.topk(sae.cfg.k, dim=-1, sorted=False).indices)
    else:
        crow, col, rows = _select_batch_topk(pre, sae.cfg.k)
    acts = F.relu(_GatherPreActs.apply(x_c, sae.W_enc, sae.b_enc, pre, crow, col, rows))
    x_hat = _SparseDecode.apply(acts, crow, col, sae.W_dec) + sae.b_dec
    return x_hat, SparseCodes(crow, col, rows, acts, sae.cfg.d_sae), pre, x_c


def _auxk_select(pre: torch.Tensor, dead: torch.Tensor, k_aux: int):
    """Each token's k_aux largest pre-activations among dead latents, as a CSR pattern."""
    dead_ids = dead.nonzero().squeeze(1)
    local = pre[:, dead_ids].topk(min(k_aux, len(dead_ids)), dim=-1, sorted=False).indices
    return _csr_from_topk(dead_ids[local])[:3]


def auxk_loss(residual: torch.Tensor, residual_hat: torch.Tensor, n_dead: int, k_aux: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024): how well the dead latents reconstruct the live latents' residual, normalised by the
    residual's variance and scaled down while few latents are dead (as sparsify and dictionary_learning do)."""
    scale = min(n_dead / k_aux, 1.0)
    variance = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
    return scale * (residual_hat - residual).pow(2).sum(-1).mean() / variance


def auxk_loss_sparse(sae: SAE, pre: torch.Tensor, x_c: torch.Tensor, residual: torch.Tensor,
                     dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    crow, col, rows = _auxk_select(pre, dead, k_aux)
    acts = _GatherPreActs.apply(x_c, sae.W_enc, sae.b_enc, pre, crow, col, rows)
    return auxk_loss(residual, _SparseDecode.apply(acts, crow, col, sae.W_dec), int(dead.sum()), k_aux)


def auxk_loss_dense(sae: SAE, out: SAEOutput, residual: torch.Tensor, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    """The readable AuxK: each token's top-k_aux pre-activations among dead latents, decoded without b_dec.

    The pre-activations are used as they are, without a relu (as in SAELens): a latent whose pre-activations
    are all negative still gets a gradient that can bring it back."""
    n_dead = int(dead.sum())
    masked = torch.where(dead, out.pre_acts, torch.full_like(out.pre_acts, -torch.inf))
    values, indices = masked.topk(min(k_aux, n_dead), dim=-1, sorted=False)
    aux_latents = torch.zeros_like(out.pre_acts).scatter(-1, indices, values)
    return auxk_loss(residual, aux_latents @ sae.W_dec, n_dead, k_aux)


__all__ = ["SparseCodes", "auxk_loss", "auxk_loss_dense", "auxk_loss_sparse", "sparse_forward"]
