"""Checkers for the notebooks' write-it-yourself exercises: each compares a learner's function with saelab's own and,
when they differ, names the likely mistake."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from saelab.activations import extract
from saelab.classifsae import activation_rate_loss
from saelab.probing import pool_codes
from saelab.sae import SAE, SAEConfig


def check_topk_encode(fn: Callable, x_eval: torch.Tensor, k: int = 8) -> None:
    """Check `fn(x, W_enc, b_enc, b_dec, k)` against `SAE.encode` of a TopK SAE on held-out tokens `x_eval`, with
    biases that push some tokens' k-th largest pre-activation below zero (so a missing ReLU shows)."""
    sae = SAE(SAEConfig(d_in=x_eval.shape[1], d_sae=256, architecture="topk", k=k), seed=0)
    x = x_eval[:64]
    with torch.no_grad():
        sae.b_dec.copy_(x_eval[:512].mean(0))
        pre = (x - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-pre.topk(k, dim=-1).values[:, -1].median() + 0.1 * pre.std() * torch.randn(256))
    with torch.no_grad():
        mine, ours = fn(x, sae.W_enc, sae.b_enc, sae.b_dec, k), sae.encode(x)
    assert mine.shape == ours.shape, f"shape {tuple(mine.shape)}; expected [tokens, d_sae] = {tuple(ours.shape)}"
    n_active = (mine != 0).sum(-1)
    assert (n_active <= k).all(), f"up to {int(n_active.max())} latents active in a token: keep only the k largest"
    assert (mine >= 0).all(), "some latents are negative: apply the ReLU to the values you keep"
    if not torch.allclose(mine, ours, atol=1e-4):
        with torch.no_grad():
            forgot_b_dec = sae.activation(x @ sae.W_enc + sae.b_enc)
        if torch.allclose(mine, forgot_b_dec, atol=1e-4):
            raise AssertionError("you encoded x, not x - b_dec: the decoder bias is subtracted before encoding")
        raise AssertionError("the active latents or their values differ from sae.encode: compare "
                             "(x - b_dec) @ W_enc + b_enc and the k largest of it, token by token")
    print(f"correct: your TopK encoder matches sae.encode on {len(x)} tokens ({k} of 256 latents active at most)")


def check_activation_rate_loss(fn: Callable, tau: float = 0.1) -> None:
    """Check `fn(z, tau)` against ClassifSAE's `activation_rate_loss` on a random sparse batch of 50 x 12 codes."""
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(50, 12, generator=g)) * (torch.rand(50, 12, generator=g) < 0.4)
    mine, ours = float(fn(z, tau)), float(activation_rate_loss(z, tau))
    if abs(mine - ours) < 1e-5:
        print(f"correct: {mine:.4f} (each latent fires freely on {int(50 * tau)} of 50 sentences)")
        return
    per_sentence = float((z * torch.ones_like(z, dtype=torch.bool).scatter(1, z.topk(int(12 * tau), dim=1).indices,
                                                                            False)).sum() / 50)
    if abs(mine - per_sentence) < 1e-5:
        raise AssertionError("you kept each *sentence's* top activations (dim=1); the budget is per *latent*: "
                             "take the top over the batch, dim=0")
    if abs(mine - ours * 50) < 1e-3:
        raise AssertionError("the sum is not divided by the batch size B")
    if abs(mine - float(z.sum()) / 50) < 1e-5:
        raise AssertionError("nothing was exempted: each latent's top floor(B * tau) activations are free")
    raise AssertionError(f"got {mine:.4f}, expected {ours:.4f}")


def check_hidden_states_hook(model, fn: Callable[[int], str], layer: int,
                             texts: Sequence[str] = ("The cat sat on the mat.", "Stocks fell sharply on Monday")):
    """Exercise check: `fn(layer)` must name the hook equal to Hugging Face's ``hidden_states[layer]`` (BOS
    included); raises an AssertionError with a hint otherwise."""
    hf_model, tokenizer = model.original_model, model.tokenizer
    for text in texts:
        with torch.no_grad():
            hf = hf_model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[layer][0]
        ours = extract(model, [text], fn(layer), pooling="none", include_bos=True, progress=False).tensor
        if not torch.allclose(hf, ours, atol=1e-3, rtol=1e-3):
            post = extract(model, [text], f"blocks.{layer - 1}.hook_resid_post", pooling="none", include_bos=True,
                           progress=False).tensor
            hint = (f" It does equal blocks.{layer - 1}.hook_resid_post: the stream entering block {layer} is the one"
                    f" leaving block {layer - 1}." if torch.allclose(hf, post, atol=1e-3, rtol=1e-3) else "")
            raise AssertionError(f"{fn(layer)} differs from hidden_states[{layer}] (max |diff| "
                                 f"{(hf - ours).abs().max():.3g}).{hint}")
    print(f"correct: {fn(layer)} equals Hugging Face's hidden_states[{layer}] on {len(texts)} texts, BOS included")


def check_topn_counts(fn: Callable[[torch.Tensor, int], torch.Tensor], codes: torch.Tensor, k: int):
    """Exercise check: `fn(codes, n)` must give the top-n vote counts of one text's codes [tokens, d_sae] that
    `saelab.probing.pool_codes` gives, for n = 1, 5 and k + 8 (above a TopK SAE's k)."""
    for n in (1, 5, k + 8):
        expected = pool_codes(codes, [len(codes)], "topn", top_n=n)[0]
        mine = fn(codes, n)
        assert mine.shape == expected.shape, f"shape {tuple(mine.shape)}; expected [d_sae] = {tuple(expected.shape)}"
        if not torch.equal(mine, expected):
            if mine.sum() == len(codes) * n and expected.sum() < mine.sum():
                raise AssertionError(f"with top_n={n} > k={k} you gave votes to inactive latents (code 0): "
                                     "count only values > 0")
            raise AssertionError(f"counts differ from probing.pool_codes for top_n={n}: each token should add 1 to "
                                 f"each of its top_n latents (total votes {int(expected.sum())}, yours "
                                 f"{int(mine.sum())})")
    print(f"correct: your top-n counts match probing.pool_codes on a {len(codes)}-token tweet "
          f"(top_n = 1, 5 and {k + 8})")


__all__ = ["check_activation_rate_loss", "check_hidden_states_hook", "check_topk_encode", "check_topn_counts"]
