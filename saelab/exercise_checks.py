"""Checkers for the notebooks' write-it-yourself exercises: each compares a learner's function with saelab's own and,
when they differ, names the likely mistake.

The checks of notebooks 00-02 live in `saelab.exercise_basics`, those of 03-04 in `saelab.exercise_classifiers`, of
05 in `saelab.exercise_senses` and of 06 in `saelab.exercise_steering`; all are re-exported here, so every exercise
cell reads ``exercise_checks.check_...(my_function)``. A learner's exception becomes an `AssertionError` with a hint
(`call_learner`); a stub's `NotImplementedError` passes through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from saelab.activations import extract
from saelab.classifsae import activation_rate_loss
from saelab.exercise_basics import (
    as_float,
    as_tensor,
    call_learner,
    check_bos_norm_ratio,
    check_ce_loss_score,
    check_explained_variance,
    check_frac_alive,
    check_kl_divergence,
    check_last_token,
    check_masked_mean,
    check_massive_dims,
    check_scale_hook,
    check_standardised_cosine,
)
from saelab.exercise_classifiers import (
    check_activation_rate,
    check_binarize,
    check_macro_f1,
    check_normalized_reconstruction,
)
from saelab.exercise_senses import check_confusion, check_jaccard, check_top1
from saelab.exercise_steering import check_harmonic_mean, check_output_score, check_token_confidence
from saelab.probing import pool_codes
from saelab.reformulation import Prototypes, Reading, SenseItem, annotate, nearest_sense
from saelab.sae import SAE, SAEConfig
from saelab.tasks import Sense


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
        mine, ours = as_tensor(call_learner(fn, x, sae.W_enc, sae.b_enc, sae.b_dec, k), "your encoder"), sae.encode(x)
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
    """Exercise 03.1: check `fn(z, tau)` against ClassifSAE's `activation_rate_loss` on a random sparse batch of
    50 x 12 codes."""
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(50, 12, generator=g)) * (torch.rand(50, 12, generator=g) < 0.4)
    mine, ours = as_float(call_learner(fn, z, tau), "your loss"), float(activation_rate_loss(z, tau))
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


def check_hidden_states_hook(fn: Callable[[int], str], model, layer: int,
                             texts: Sequence[str] = ("The cat sat on the mat.", "Stocks fell sharply on Monday")):
    """Exercise 04.1: `fn(layer)` must name the hook equal to Hugging Face's ``hidden_states[layer]`` (BOS
    included) in `model`; raises an AssertionError with a hint otherwise."""
    hf_model, tokenizer = model.original_model, model.tokenizer
    for text in texts:
        with torch.no_grad():
            hf = hf_model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[layer][0]
        ours = extract(model, [text], call_learner(fn, layer), pooling="none", include_bos=True, progress=False).tensor
        if not torch.allclose(hf, ours, atol=1e-3, rtol=1e-3):
            post = extract(model, [text], f"blocks.{layer - 1}.hook_resid_post", pooling="none", include_bos=True,
                           progress=False).tensor
            hint = (f" It does equal blocks.{layer - 1}.hook_resid_post: the stream entering block {layer} is the one"
                    f" leaving block {layer - 1}." if torch.allclose(hf, post, atol=1e-3, rtol=1e-3) else "")
            raise AssertionError(f"{fn(layer)} differs from hidden_states[{layer}] (max |diff| "
                                 f"{(hf - ours).abs().max():.3g}).{hint}")
    print(f"correct: {fn(layer)} equals Hugging Face's hidden_states[{layer}] on {len(texts)} texts, BOS included")


def check_topn_counts(fn: Callable[[torch.Tensor, int], torch.Tensor], codes: torch.Tensor, k: int):
    """Exercise 04.2: `fn(codes, n)` must give the top-n vote counts of one text's codes [tokens, d_sae] that
    `saelab.probing.pool_codes` gives, for n = 1, 5 and k + 8 (above a TopK SAE's k)."""
    for n in (1, 5, k + 8):
        expected = pool_codes(codes, [len(codes)], "topn", top_n=n)[0]
        mine = as_tensor(call_learner(fn, codes, n), "your function")
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


def check_annotate(fn: Callable[[str, tuple[int, int], str], str]) -> None:
    """Exercise check (notebook 07): `fn(text, span, note)` must insert " (note)" right after the word at `span`."""
    cases = [("China has many camps for political prisoners", (15, 20), "a penal colony"),
             ("the line was busy", (4, 8), "a telephone connection"), ("Paper", (0, 5), "a medium for writing")]
    for text, span, note in cases:
        mine, ours = call_learner(fn, text, span, note), annotate(text, span, note)
        if not isinstance(mine, str):
            raise AssertionError(f"got {mine!r}: return the annotated text as a string")
        if mine == ours:
            continue
        if mine == f"{text[:span[0]]}({note}) {text[span[0]:]}":
            raise AssertionError("the note went before the word: insert it after the word (at span[1])")
        if mine.replace(" (", "(") == ours.replace(" (", "("):
            raise AssertionError(f"{mine!r}: put one space between the word and the opening parenthesis")
        raise AssertionError(f"got {mine!r}, expected {ours!r}: text up to the word's end, ' (note)', the rest")
    print(f"correct: your annotation matches reformulation.annotate on {len(cases)} sentences")


def check_nearest_sense(fn: Callable[[torch.Tensor, list[torch.Tensor]], int], seed: int = 0) -> None:
    """Exercise check (notebook 07): `fn(code, contexts)` (a code [d_sae] and, per sense, its contexts' codes
    [n_j, d_sae]) must return the sense whose mean context code is most cosine-similar to `code`."""
    g = torch.Generator().manual_seed(seed)
    for trial in range(20):
        n_senses = 2 + trial % 4
        contexts = [torch.relu(torch.randn(1 + (trial + j) % 3, 32, generator=g)) for j in range(n_senses)]
        code = torch.relu(torch.randn(32, generator=g)) * (1 + 3 * torch.rand(32, generator=g))
        senses = tuple(Sense(f"w.n.{j}", "noun.artifact", f"g{j}", ()) for j in range(n_senses))
        item = SenseItem("a w", "w", (2, 3), "w", "noun", senses)
        rows = [(j, c) for j, block in enumerate(contexts) for c in block]
        protos = Prototypes([("w", "noun")] * len(rows), [j for j, _ in rows], ["example"] * len(rows),
                            [f"c{i}" for i in range(len(rows))], torch.stack([c for _, c in rows]))
        ours: Reading = nearest_sense(code[None], protos.acts, [item], protos)
        mine = int(as_float(call_learner(fn, code, contexts), "your reading"))
        if mine != int(ours.choice[0]):
            unit, c = [torch.nn.functional.normalize(b, dim=-1) for b in contexts], code / code.norm()
            mean_cos = int(torch.stack([(u @ c).mean() for u in unit]).argmax())
            dots = int(torch.stack([b.mean(0) @ code for b in contexts]).argmax())
            hint = ("you averaged the cosines of the contexts; take the cosine with their mean code (the prototype)"
                    if mine == mean_cos else "you compared dot products: normalise both vectors (cosine)"
                    if mine == dots else "compare the code with each sense's mean context code by cosine")
            raise AssertionError(f"trial {trial}: sense {mine}, expected {int(ours.choice[0])}: {hint}")
    print("correct: your reading matches reformulation.nearest_sense on 20 random words")


def check_repair_damage(fn: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, float]],
                        seed: int = 0) -> None:
    """Exercise check (notebook 07): `fn(correct_before, correct_after, trigger)` must return (repair rate, damage
    rate): among the triggered items, the share wrong before and right after, and right before and wrong after."""
    rng = np.random.default_rng(seed)
    before, after, trigger = (rng.random(200) < p for p in (0.6, 0.7, 0.3))
    t = trigger.sum()
    repair, damage = (trigger & ~before & after).sum() / t, (trigger & before & ~after).sum() / t
    mine = call_learner(fn, before, after, trigger)
    if not isinstance(mine, tuple | list) or len(mine) != 2:
        raise AssertionError(f"got {mine!r}: return two numbers, (repair rate, damage rate)")
    mine = tuple(as_float(v, "your function") for v in mine)
    if np.allclose(mine, (repair, damage)):
        print(f"correct: repair {repair:.3f}, damage {damage:.3f} among {t} triggered items")
        return
    if np.allclose(mine, (damage, repair)):
        raise AssertionError("repair and damage are swapped: repaired = wrong before and right after")
    if np.allclose(mine, (repair * t / 200, damage * t / 200)):
        raise AssertionError("you divided by all items: the rates are among the triggered items only")
    if np.allclose(mine, ((~before & after).sum() / 200, (before & ~after).sum() / 200)):
        raise AssertionError("count only the triggered items (elsewhere the policy keeps the unannotated prompt)")
    raise AssertionError(f"got {mine}, expected ({repair:.3f}, {damage:.3f})")


__all__ = ["call_learner", "check_activation_rate", "check_activation_rate_loss", "check_annotate",
           "check_binarize", "check_bos_norm_ratio", "check_ce_loss_score", "check_confusion",
           "check_explained_variance", "check_frac_alive", "check_harmonic_mean", "check_hidden_states_hook",
           "check_jaccard", "check_kl_divergence", "check_last_token", "check_macro_f1", "check_masked_mean",
           "check_massive_dims", "check_nearest_sense", "check_normalized_reconstruction", "check_output_score",
           "check_repair_damage", "check_scale_hook", "check_standardised_cosine", "check_token_confidence",
           "check_top1", "check_topk_encode", "check_topn_counts"]
