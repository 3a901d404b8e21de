"""Every exercise check in `saelab.exercise_checks`: it accepts the reference solution, and it rejects typical wrong
answers with a message that names the mistake (never a bare crash from inside the check). A stub's
`NotImplementedError` passes through unchanged, so the exercise notebooks stop at the first unwritten exercise."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saelab import exercise_checks as ex
from saelab.classifsae import activation_rate_loss, normalized_reconstruction_loss
from saelab.concept_metrics import activation_rate
from saelab.probing import pool_codes
from saelab.reformulation import annotate
from saelab.sae import SAE, SAEConfig
from saelab.steering import output_score_from_logits


def _stub(*args, **kwargs):
    raise NotImplementedError("write your solution here")


# ---------------------------------------------------------------------------------------------------------------
# reference solutions (as in the solution notebooks) and typical wrong answers
# ---------------------------------------------------------------------------------------------------------------

def kl_ref(clean, edited):
    log_p, log_q = clean.log_softmax(-1), edited.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def scale_ref(activation, hook, alpha):
    return alpha * activation


def bos_ref(norms):
    return norms[:, 0] / norms[:, 1:].mean(1)


def masked_mean_ref(acts, mask):
    m = mask.unsqueeze(-1).float()
    return (acts * m).sum(1) / m.sum(1)


def last_token_ref(acts, mask):
    last = (torch.arange(mask.shape[1]) * mask).argmax(1)
    return acts[torch.arange(len(acts)), last]


def massive_ref(X, n):
    return X.abs().mean(0).argsort(descending=True)[:n]


def std_cos_ref(a, b, mean, std):
    return F.cosine_similarity((a - mean) / std, (b - mean) / std, dim=-1)


def topk_ref(x, W_enc, b_enc, b_dec, k):
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def ev_ref(x, x_hat):
    return 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()


def frac_alive_ref(sae, x):
    with torch.no_grad():
        return (sae.encode(x) > 0).any(dim=0).float().mean().item()


def ce_score_ref(ce_clean, ce_sae, ce_zero):
    return (ce_zero - ce_sae) / (ce_zero - ce_clean)


def reading_ref(code, contexts):
    prototypes = torch.stack([c.mean(0) for c in contexts])
    return int(F.cosine_similarity(prototypes, code[None], dim=-1).argmax())


def repair_ref(before, after, trigger):
    n = trigger.sum()
    return (trigger & ~before & after).sum() / n, (trigger & before & ~after).sum() / n


def racc_rate_ref(z):
    return activation_rate(z, alive_only=True)


def binarize_ref(feats, t):
    return (feats > t).astype(float)


def macro_f1_ref(y_true, y_pred):
    scores = []
    for c in np.unique(y_true):
        tp, fp, fn = ((y_pred == c) & (y_true == c)).sum(), ((y_pred == c) & (y_true != c)).sum(), \
            ((y_pred != c) & (y_true == c)).sum()
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def top1_ref(codes):
    values, ids = codes.max(1)
    return torch.where(values > 0, ids, torch.full_like(ids, -1))


def confusion_ref(top1, labels):
    same = ((top1[:, 0] == top1[:, 1]) & (top1[:, 0] >= 0)).numpy()
    tp, fn = int(((labels == 1) & same).sum()), int(((labels == 1) & ~same).sum())
    fp, tn = int(((labels == 0) & same).sum()), int(((labels == 0) & ~same).sum())
    return {"tp": tp, "fn": fn, "fp": fp, "tn": tn, "specificity": tn / (tn + fp)}


def confusion_with(top1, labels, same=None, specificity=None):
    same = (top1[:, 0] == top1[:, 1]).numpy() if same is None else same
    tp, fn = int(((labels == 1) & same).sum()), int(((labels == 1) & ~same).sum())
    fp, tn = int(((labels == 0) & same).sum()), int(((labels == 0) & ~same).sum())
    return {"tp": tp, "fn": fn, "fp": fp, "tn": tn, "specificity": tn / (tn + fp) if specificity is None
            else specificity(tp, fn, fp, tn)}


def jaccard_ref(codes_1, codes_2, k):
    out = []
    for a, b in zip(codes_1, codes_2):
        A = {int(i) for v, i in zip(*a.topk(k)) if v > 0}
        B = {int(i) for v, i in zip(*b.topk(k)) if v > 0}
        out.append(len(A & B) / len(A | B) if A | B else 0.0)
    return torch.tensor(out)


def c_k_ref(logits, k):
    return -torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1).values.mean(-1)


def harmonic_ref(values):
    values = [float(v) for v in values]
    return 0.0 if any(v == 0 for v in values) else len(values) / sum(1 / v for v in values)


def output_score_ref(logits, lens):
    probs = logits.softmax(-1)
    best = probs.gather(1, lens).max(1).values
    rank = (probs > best[:, None]).sum(1)
    return (1 - rank / probs.shape[1]) * best


def topk_without_relu(x, W_enc, b_enc, b_dec, k):
    values, indices = ((x - b_dec) @ W_enc + b_enc).topk(k, dim=-1)
    return torch.zeros(len(x), W_enc.shape[1]).scatter(-1, indices, values)


@pytest.fixture(scope="module")
def small_sae():
    sae = SAE(SAEConfig(d_in=16, d_sae=64, architecture="relu"), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-2.5)  # some latents dead, some tokens with no active latent: every wrong answer differs
    return sae


X16 = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))

CASES = {
    "kl_divergence": (ex.check_kl_divergence, (), kl_ref, [
        (lambda p, q: kl_ref(q, p), "KL(edited || clean)"),
        (lambda p, q: (p.softmax(-1) * (p.softmax(-1).log() - q.softmax(-1).log())).sum(-1), "NaN"),
        (lambda p, q: kl_ref(p, q) / np.log(2), "bits"),
        (lambda p, q: (p * (p - q)).sum(-1), "without a softmax"),
        (lambda p, q: kl_ref(p, q).sum(), "shape"),
    ]),
    "scale_hook": (ex.check_scale_hook, (), scale_ref, [
        (lambda a, hook, alpha: a + alpha, "added alpha"),
        (lambda a, hook, alpha: None, "returned None"),
        (lambda a, hook, alpha: alpha ** 2 * a, "twice"),
        (lambda a, hook, alpha: a, "unchanged"),
    ]),
    "bos_norm_ratio": (ex.check_bos_norm_ratio, (), bos_ref, [
        (lambda n: n[:, 0] / n.mean(1), "included BOS"),
        (lambda n: n[:, 1:].mean(1) / n[:, 0], "upside down"),
        (lambda n: n[:, 0] / n[:, 1:].median(1).values, "median"),
    ]),
    "masked_mean": (ex.check_masked_mean, (), masked_mean_ref, [
        (lambda a, m: a.mean(1), "padding and BOS"),
        (lambda a, m: (a * m.unsqueeze(-1)).sum(1) / a.shape[1], "divided by every position"),
        (lambda a, m: (a * m.unsqueeze(-1)).sum(1), "that is a sum"),
        (lambda a, m: a.mean(0), "shape"),
    ]),
    "last_token": (ex.check_last_token, (), last_token_ref, [
        (lambda a, m: a[:, -1], "padding"),
        (lambda a, m: a[torch.arange(len(a)), m.sum(1) - 1], "mask.sum(1) - 1"),
    ]),
    "massive_dims": (ex.check_massive_dims, (), massive_ref, [
        (lambda X, n: X.mean(0).argsort(descending=True)[:n], "signed mean"),
        (lambda X, n: X.std(0).argsort(descending=True)[:n], "spread"),
        (lambda X, n: X.abs().mean(0).argsort()[-n:], "wrong order"),
    ]),
    "standardised_cosine": (ex.check_standardised_cosine, (), std_cos_ref, [
        (lambda a, b, m, s: F.cosine_similarity(a, b, dim=-1), "raw cosine"),
        (lambda a, b, m, s: F.cosine_similarity(a - m, b - m, dim=-1), "centred but not scaled"),
        (lambda a, b, m, s: (((a - m) / s) * ((b - m) / s)).sum(-1), "dot product"),
    ]),
    "topk_encode": (ex.check_topk_encode, (X16, 4), topk_ref, [
        (topk_without_relu, "negative"),
        (lambda x, W, b, d, k: topk_ref(x + d, W, b, d, k), "x - b_dec"),
        (lambda x, W, b, d, k: topk_ref(x, W, b, d, k + 1), "keep only the k largest"),
    ]),
    "explained_variance": (ex.check_explained_variance, (), ev_ref, [
        (lambda x, xh: 1 - ((x - xh) ** 2).sum() / (x ** 2).sum(), "not centred"),
        (lambda x, xh: ((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), "unexplained share"),
        (lambda x, xh: (1 - ((x - xh) ** 2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)).mean(), "per-dimension"),
    ]),
    "ce_loss_score": (ex.check_ce_loss_score, (), ce_score_ref, [
        (lambda c, s, z: (s - c) / (z - c), "1 - the score"),
        (lambda c, s, z: (z - s) / z, "denominator"),
        (lambda c, s, z: (z - s) / (c - z), "sign is flipped"),
        (lambda c, s, z: (z - s) / (s - c), "raised ZeroDivisionError"),
    ]),
    "activation_rate_loss": (ex.check_activation_rate_loss, (), activation_rate_loss, [
        (lambda z, tau: z.sum() / len(z), "nothing was exempted"),
        (lambda z, tau: activation_rate_loss(z, tau) * len(z), "not divided by the batch size"),
    ]),
    "normalized_reconstruction": (ex.check_normalized_reconstruction, (), normalized_reconstruction_loss, [
        (lambda x, xh: ((xh - x) ** 2).sum(-1).div((x - x.mean(0)).norm(dim=-1) ** 2).mean(), "squared distance"),
        (lambda x, xh: ((xh - x) ** 2).sum(-1).div(x.norm(dim=-1)).mean(), "centre x"),
        (lambda x, xh: ((xh - x) ** 2).sum() / (x - x.mean(0)).norm(dim=-1).sum(), "ratio of sums"),
        (lambda x, xh: ((xh - x) ** 2).mean(-1).div((x - x.mean(0)).norm(dim=-1)).mean(), "over dimensions"),
    ]),
    "activation_rate": (ex.check_activation_rate, (), racc_rate_ref, [
        (lambda z: (z > 0).float().mean(), "dead concepts"),
        (lambda z: (z > 0).any(1).float().mean(), "*any* concept"),
        (lambda z: (z > 0).sum(1).float().mean(), "concepts per sentence"),
    ]),
    "binarize": (ex.check_binarize, (), binarize_ref, [
        (lambda f, t: (f >= t).astype(float), "strictly"),
        (lambda f, t: f * (f > t), "values came back"),
        (lambda f, t: (f > 0).astype(float), "threshold was ignored"),
        (lambda f, t: (f > t)[:, :5], "shape"),
    ]),
    "macro_f1": (ex.check_macro_f1, (), macro_f1_ref, [
        (lambda t, p: np.mean(t == p), "accuracy"),
        (lambda t, p: float(np.mean([2 * ((p == c) & (t == c)).sum() / ((p == c).sum() + (t == c).sum())
                                     for c in np.unique(p)])), "never predicts"),
        (lambda t, p: float(np.mean([np.mean(p[t == c] == c) for c in np.unique(t)])), "macro-recall"),
    ]),
    "top1": (ex.check_top1, (), top1_ref, [
        (lambda c: c.argmax(1), "got latent 0"),
        (lambda c: c.max(1).values, "top activations"),
        (lambda c: top1_ref(c)[:5], "shape"),
    ]),
    "confusion": (ex.check_confusion, (), confusion_ref, [
        (lambda t, y: {**confusion_ref(t, y), "tp": confusion_ref(t, y)["tn"], "tn": confusion_ref(t, y)["tp"]},
         "swapped"),
        (lambda t, y: confusion_with(t, y), "nothing fires"),
        (lambda t, y: confusion_with(t, y, ((t[:, 0] == t[:, 1]) & (t[:, 0] >= 0)).numpy(),
                                     lambda tp, fn, fp, tn: tn / (tn + fn)), "TN / (TN + FN)"),
        (lambda t, y: [1, 2], "return a dict"),
    ]),
    "jaccard": (ex.check_jaccard, (), jaccard_ref, [
        (lambda a, b, k: torch.tensor([len(set(x.topk(k).indices.tolist()) & set(y.topk(k).indices.tolist()))
                                       / len(set(x.topk(k).indices.tolist()) | set(y.topk(k).indices.tolist()))
                                       for x, y in zip(a, b)]), "inactive latents"),
        (lambda a, b, k: torch.tensor(
            [len({int(i) for v, i in zip(*x.topk(k)) if v > 0} & {int(i) for v, i in zip(*y.topk(k)) if v > 0}) / k
             for x, y in zip(a, b)]), "divided the intersection by k"),
        (lambda a, b, k: torch.tensor([len(A & B) / len(A | B) if A | B else float("nan") for A, B in
                                       (({int(i) for v, i in zip(*x.topk(k)) if v > 0},
                                         {int(i) for v, i in zip(*y.topk(k)) if v > 0}) for x, y in zip(a, b))]),
         "NaN"),
    ]),
    "token_confidence": (ex.check_token_confidence, (), c_k_ref, [
        (lambda lg, k: -c_k_ref(lg, k), "sign is flipped"),
        (lambda lg, k: c_k_ref(lg, k) * k, "summed"),
        (lambda lg, k: -lg.topk(k, -1).values.mean(-1), "raw logits"),
        (lambda lg, k: c_k_ref(lg, k)[None], "shape"),
    ]),
    "harmonic_mean": (ex.check_harmonic_mean, (), harmonic_ref, [
        (lambda v: len(v) / sum(1 / x for x in v), "1 / 0 on the zero rating"),
        (lambda v: len(v) / sum(1 / x for x in v if x), "must be 0"),
        (lambda v: 0.0 if 0 in v else sum(v) / len(v), "arithmetic mean"),
        (lambda v: 0.0 if 0 in v else sum(1 / x for x in v) / len(v), "1 / the harmonic mean"),
    ]),
    "output_score": (ex.check_output_score, (), output_score_ref, [
        (lambda lg, lens: lg.softmax(-1).gather(1, lens).max(1).values, "probability alone"),
        (lambda lg, lens: output_score_ref(lg, lens[:, :1]), "first logit-lens token"),
        (lambda lg, lens: output_score_from_logits(lg, lens) - lg.softmax(-1).gather(1, lens).max(1).values
         / lg.shape[1], "ranked from 1"),
    ]),
    "annotate": (ex.check_annotate, (), annotate, [
        (lambda t, s, n: f"{t[:s[0]]}({n}) {t[s[0]:]}", "before the word"),
        (lambda t, s, n: f"{t[:s[1]]}({n}){t[s[1]:]}", "one space"),
        (lambda t, s, n: f"{t} ({n})", "the rest"),
    ]),
    "nearest_sense": (ex.check_nearest_sense, (), reading_ref, [
        (lambda c, ctx: int(torch.stack([F.cosine_similarity(b, c[None], dim=-1).mean() for b in ctx]).argmax()),
         "averaged the cosines"),
        (lambda c, ctx: int(torch.stack([b.mean(0) @ c for b in ctx]).argmax()), "dot products"),
    ]),
    "repair_damage": (ex.check_repair_damage, (), repair_ref, [
        (lambda b, a, t: repair_ref(b, a, t)[::-1], "swapped"),
        (lambda b, a, t: ((t & ~b & a).sum() / len(t), (t & b & ~a).sum() / len(t)), "divided by all items"),
        (lambda b, a, t: ((~b & a).sum() / len(t), (b & ~a).sum() / len(t)), "only the triggered"),
        (lambda b, a, t: (float((t & ~b & a).sum()) / int((t & ~t).sum()), 0.0), "raised ZeroDivisionError"),
        (lambda b, a, t: None, "return two numbers"),
    ]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_accepts_the_reference(name, capsys, one_thread):
    check, args, reference, _ = CASES[name]
    check(reference, *args)
    assert capsys.readouterr().out.startswith("correct"), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_names_the_mistake(name, one_thread):
    check, args, _, wrong_answers = CASES[name]
    assert len(wrong_answers) >= 2, f"{name}: test at least two typical wrong answers"
    for wrong, hint in wrong_answers:
        with pytest.raises(AssertionError, match=re.escape(hint)):
            check(wrong, *args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_stub_passes_through(name, one_thread):
    check, args, _, _ = CASES[name]
    with pytest.raises(NotImplementedError):
        check(_stub, *args)


def test_frac_alive(small_sae, capsys, one_thread):
    ex.check_frac_alive(frac_alive_ref, small_sae, X16)
    assert capsys.readouterr().out.startswith("correct")
    wrong = {"density": lambda sae, x: (sae.encode(x) > 0).float().mean().item(),
             "between 0 and 1": lambda sae, x: float((sae.encode(x) > 0).any(0).sum()),
             "share of tokens": lambda sae, x: (sae.encode(x) > 0).any(1).float().mean().item()}
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            ex.check_frac_alive(fn, small_sae, X16)


def test_topn_counts(capsys, one_thread):
    g = torch.Generator().manual_seed(0)
    codes = torch.relu(torch.randn(12, 40, generator=g)) * (torch.rand(12, 40, generator=g) < 0.2)

    def counts(c, n):
        return pool_codes(c, [len(c)], "topn", top_n=n)[0]

    def inactive_votes(c, n):
        return torch.zeros(c.shape[1]).scatter_add(0, c.topk(n, dim=1).indices.flatten(), torch.ones(len(c) * n))

    ex.check_topn_counts(counts, codes, k=8)
    assert capsys.readouterr().out.startswith("correct")
    with pytest.raises(AssertionError, match="inactive latents"):
        ex.check_topn_counts(inactive_votes, codes, k=8)
    with pytest.raises(AssertionError, match="shape"):
        ex.check_topn_counts(lambda c, n: counts(c, n)[None], codes, k=8)


def test_hooks_in_a_real_forward_pass(tiny, capsys):
    """The two checks that run the learner's answer inside a model (00.2 and 04's hidden_states hook)."""
    tokens = tiny.to_tokens("The cat sat on the mat.")
    ex.check_scale_hook(scale_ref, tiny, tokens)
    assert "inside the model" in capsys.readouterr().out
    ex.check_hidden_states_hook(lambda layer: f"blocks.{layer}.hook_resid_pre", tiny, 1, texts=("a cat",))
    with pytest.raises(AssertionError, match="does equal blocks.0.hook_resid_post"):
        ex.check_hidden_states_hook(lambda layer: f"blocks.{layer}.hook_resid_post", tiny, 1, texts=("a cat",))
    with pytest.raises(AssertionError, match="raised"):
        ex.check_hidden_states_hook(lambda layer: 1 / 0, tiny, 1, texts=("a cat",))
