"""notebook 06: judge-free interpretability proxies, the AxBench-style steering score and rank agreement.

The steering score follows AxBench's recipe with a pluggable judge: each steered continuation gets concept,
fluency and relevance ratings in [0, 1], combined by a harmonic mean that is zero when any rating is zero; the
steering strength is chosen on half the prompts and the score reported on the other half. `JudgeFreeJudge` rates
without an LLM: concept from the latent firing when the text is re-encoded plus sentence-encoder similarity to
the latent's top contexts, fluency from perplexity under the unsteered model and repetition, relevance from
sentence-encoder similarity to the unsteered answer. `kendall_tau` measures rank agreement between
interpretability and steering utility across SAEs (`kendall_tau_b` is its vectorised statistic, for
`saelab.stats.bootstrap_interval`). The intervention, generation and the selection criteria live
in `saelab.steering`.
"""

from __future__ import annotations

import functools
import math
import random as _random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from saelab.checks import check_alpha, check_latents, check_texts, resolve_hook
from saelab.concept_metrics import encode_sentences, load_sentence_encoder, mean_pairwise_cosine
from saelab.hf_twin import forward_capturing
from saelab.stats import bootstrap_interval
from saelab.steering import (
    Generation,
    generate,
    input_score,
    positions,
    steering_vectors,
)

RATINGS = ("concept", "fluency", "relevance")
#: AxBench-style instructions, open enough to take any concept; `split_prompts` gives half of them the choice of
#: alpha and the other half the score. None is the selection criteria's neutral prompt ("From my experience,"), so
#: no criterion is scored on the text it was computed on.
EVAL_PROMPTS = ("One thing I have learned is", "Yesterday I went to the", "The best thing about weekends is",
                "My advice to a new student would be", "Here is a short story about",
                "The most important thing to know is", "Last night on the news they said",
                "I would like to tell you about", "In my town, people often", "The first thing I noticed was")


# ------------------------------------------------------------------------------------------------------------------
# Judge-free interpretability proxies
# ------------------------------------------------------------------------------------------------------------------


def sentence_embeddings(texts: Sequence[str], encoder=None) -> torch.Tensor:
    """Unit-length all-MiniLM-L6-v2 embeddings [n, d] (`saelab.concept_metrics.encode_sentences`), each distinct
    text encoded once (a judge sees the same unsteered answer many times); the encoder is loaded once per process
    when none is given."""
    texts = list(texts)
    encoder = encoder or _default_encoder()
    if not texts:
        return torch.zeros(0, encoder.get_sentence_embedding_dimension())
    distinct = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    vectors = torch.from_numpy(encode_sentences(list(distinct), encoder, progress=False)).float()
    return vectors[[distinct[t] for t in texts]]


@functools.lru_cache(maxsize=1)
def _default_encoder():
    return load_sentence_encoder()


def _mean_pairwise(vectors: torch.Tensor) -> float:
    """Mean pairwise cosine (`saelab.concept_metrics.mean_pairwise_cosine`), NaN for fewer than two vectors."""
    return mean_pairwise_cosine(vectors.numpy()) if len(vectors) >= 2 else float("nan")


def context_coherence(records, latents: Sequence[int], *, n_contexts: int = 8, encoder=None,
                      progress: bool = False) -> torch.Tensor:
    """Mean pairwise sentence-encoder similarity of each latent's top contexts (NaN with fewer than 2)."""
    texts = [records.top_context_texts(j, n_contexts) for j in latents]
    vectors = sentence_embeddings([t for group in texts for t in group], encoder)
    out, start = [], 0
    for group in tqdm(texts, desc="coherence", disable=not progress):
        out.append(_mean_pairwise(vectors[start:start + len(group)]))
        start += len(group)
    return torch.tensor(out)


def interpretability_proxies(model, sae, records, latents: Sequence[int], *, n_contexts: int = 8, encoder=None,
                             seed: int = 0) -> dict[str, float]:
    """Judge-free interpretability of an SAE over a sample of latents (SAEBench's auto-interp needs an LLM judge).

    input_score: mean input score. coherence: mean pairwise similarity of top contexts, minus the same for
    random contexts of the same texts (0 = no more alike than chance).
    """
    ids = check_latents(sae, latents)
    inputs = input_score(model, sae, ids, records)
    coherence = context_coherence(records, ids, n_contexts=n_contexts, encoder=encoder)
    chance = _mean_pairwise(sentence_embeddings(records.random_context_texts(4 * n_contexts, seed), encoder))
    return {"input_score": float(np.nanmean(inputs.numpy())) if torch.isfinite(inputs).any() else float("nan"),
            "coherence": float(np.nanmean(coherence.numpy())) - chance if torch.isfinite(coherence).any()
            else float("nan"),
            "coherence_chance": chance, "n_latents": len(ids)}


# ------------------------------------------------------------------------------------------------------------------
# The steering score: a pluggable judge, the zero-guarded harmonic mean, AxBench's alpha split
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class SteeringCase:
    """What a judge sees: a prompt, the steered and unsteered continuations, and which latent was steered."""

    prompt: str
    steered: Generation
    unsteered: Generation
    sae: Any
    latent: int
    alpha: float
    concept_texts: list[str] = field(default_factory=list)  # the latent's top-activating contexts


class Judge(Protocol):
    """Rates steering cases: one {"concept", "fluency", "relevance"} dict per case, each rating in [0, 1].

    An LLM judge that answers AxBench's 0 / 1 / 2 scale returns rating / 2.
    """

    def __call__(self, cases: Sequence[SteeringCase]) -> list[dict[str, float]]: ...


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean, zero when any value is zero (AxBench's rule: a steered text that fails one criterion fails)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("harmonic_mean needs at least one value.")
    if any(math.isnan(v) or v < 0 for v in values):
        raise ValueError(f"Ratings must be non-negative numbers, got {values}.")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


def steering_score(ratings: dict[str, float]) -> float:
    """The steering score of one rated case: harmonic mean of concept, fluency and relevance."""
    missing = [r for r in RATINGS if r not in ratings]
    if missing:
        raise ValueError(f"The judge's ratings lack {missing}; a judge returns {RATINGS} for every case.")
    return harmonic_mean([ratings[r] for r in RATINGS])


def split_prompts(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """AxBench's split: a seeded half of the prompt indices chooses alpha, the other half scores it.

    With an odd n the choosing half gets the extra prompt; n must be at least 2.
    """
    if n < 2:
        raise ValueError(f"Choosing alpha on half the prompts and scoring on the other half needs at least 2 prompts, "
                         f"got {n}.")
    order = list(range(n))
    _random.Random(seed).shuffle(order)
    half = (n + 1) // 2
    return sorted(order[:half]), sorted(order[half:])


def choose_alpha(scores: np.ndarray, alphas: Sequence[float], select: Sequence[int]) -> tuple[int, np.ndarray]:
    """Index of the alpha with the best mean score on the `select` prompts (first on ties), and those means.

    scores: [n_alphas, n_prompts] steering scores of one latent.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.shape[0] != len(alphas):
        raise ValueError(f"scores has {scores.shape[0]} rows but there are {len(alphas)} alphas.")
    means = scores[:, list(select)].mean(axis=1)
    return int(np.argmax(means)), means


class JudgeFreeJudge:
    """Rates steered continuations without an LLM (saelab's proxy for AxBench's judge), each rating in [0, 1].

    concept   = (share of generated tokens on which the latent fires when the prompt + continuation is re-encoded
                 by the unsteered model and the SAE + max(0, cosine of the continuation to the mean embedding of
                 the latent's top contexts)) / 2
    fluency   = perplexity part * (1 - repetition): the perplexity of the continuation under the unsteered model,
                mapped on a log scale from 1 (at or below `ppl_fluent`) to 0 (at or above `ppl_broken`); repetition
                is the share of repeated token n-grams (n = `ngram`)
    relevance = max(0, cosine of the steered answer to the unsteered answer of the same prompt), each answer read
                with its prompt (`with_prompt=True`): does the steered text still answer this prompt the way the
                model would? With `with_prompt=False` only the continuations are compared, which is stricter: any
                change of topic then counts against relevance.

    A continuation with no tokens rates 0 everywhere. The re-encoding runs in `forward_dtype` (None: the model's
    own; see `saelab.steering.generate`).
    """

    def __init__(self, model, encoder=None, *, ppl_fluent: float = 10.0, ppl_broken: float = 1000.0, ngram: int = 3,
                 with_prompt: bool = True, batch_size: int = 16, progress: bool = False,
                 forward_dtype: str | None = None):
        if not 1 <= ppl_fluent < ppl_broken:
            raise ValueError(f"Got ppl_fluent={ppl_fluent}, ppl_broken={ppl_broken}. Need 1 <= ppl_fluent < "
                             "ppl_broken.")
        self.model, self.encoder = model, encoder or _default_encoder()
        self.ppl_fluent, self.ppl_broken, self.ngram = ppl_fluent, ppl_broken, ngram
        self.with_prompt = with_prompt
        self.batch_size, self.progress, self.forward_dtype = batch_size, progress, forward_dtype
        self._concept_cache: dict[tuple[int, int], torch.Tensor] = {}

    # ---- the ratings ------------------------------------------------------------------------------------------

    def __call__(self, cases: Sequence[SteeringCase]) -> list[dict[str, float]]:
        cases = list(cases)
        if not cases:
            return []
        fire, nll = self._reencode(cases)
        steered_vec = sentence_embeddings([c.steered.text for c in cases], self.encoder)
        if self.with_prompt:
            answer_vec = sentence_embeddings([c.prompt + c.steered.text for c in cases], self.encoder)
            plain_vec = sentence_embeddings([c.prompt + c.unsteered.text for c in cases], self.encoder)
        else:
            answer_vec, plain_vec = steered_vec, sentence_embeddings([c.unsteered.text for c in cases], self.encoder)
        out = []
        for i, case in enumerate(cases):
            if not case.steered.ids or not case.steered.text.strip():
                out.append({"concept": 0.0, "fluency": 0.0, "relevance": 0.0, "fire_share": 0.0,
                            "concept_similarity": 0.0, "perplexity": float("inf"), "repetition": 0.0})
                continue
            concept_vec = self._concept_vector(case)
            similarity = 0.0 if concept_vec is None else _unit(float(steered_vec[i] @ concept_vec))
            perplexity = math.exp(nll[i])
            repetition = repetition_rate(case.steered.ids, self.ngram)
            out.append({
                "concept": 0.5 * fire[i] + 0.5 * similarity,
                "fluency": self.perplexity_part(perplexity) * (1 - repetition),
                "relevance": _unit(float(answer_vec[i] @ plain_vec[i])),
                "fire_share": fire[i], "concept_similarity": similarity, "perplexity": perplexity,
                "repetition": repetition,
            })
        return out

    def perplexity_part(self, perplexity: float) -> float:
        """1 at or below `ppl_fluent`, 0 at or above `ppl_broken`, linear in log perplexity between."""
        if not math.isfinite(perplexity):
            return 0.0
        low, high = math.log(self.ppl_fluent), math.log(self.ppl_broken)
        return float(min(1.0, max(0.0, (high - math.log(perplexity)) / (high - low))))

    def _concept_vector(self, case: SteeringCase) -> torch.Tensor | None:
        key = (id(case.sae), case.latent)
        if key not in self._concept_cache:
            texts = [t for t in case.concept_texts if t.strip()]
            if not texts:
                return None
            mean = sentence_embeddings(texts, self.encoder).mean(0)
            self._concept_cache[key] = mean / mean.norm().clamp_min(1e-8)
        return self._concept_cache[key]

    @torch.no_grad()
    def _reencode(self, cases: list[SteeringCase]) -> tuple[list[float], list[float]]:
        """One unsteered forward pass per batch gives both the latent's firing share on the continuation (read at
        the SAE's hook) and the continuation's mean negative log-likelihood."""
        model = self.model
        device = next(model.parameters()).device
        pad = model.tokenizer.pad_token_id or 0
        fire = [0.0] * len(cases)
        nll = [float("inf")] * len(cases)
        todo = [i for i, c in enumerate(cases) if c.steered.ids]
        todo.sort(key=lambda i: (len(cases[i].steered.prompt_ids), len(cases[i].steered.ids)))
        bar = tqdm(total=len(todo), desc="judge", unit="text", disable=not self.progress)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            prompt_w = max(len(cases[i].steered.prompt_ids) for i in rows)
            cont_w = max(len(cases[i].steered.ids) for i in rows)
            ids, mask = [], []
            for i in rows:  # prompt padded on the left, continuation on the right: continuations line up
                p, c = cases[i].steered.prompt_ids, cases[i].steered.ids
                ids.append([pad] * (prompt_w - len(p)) + p + c + [pad] * (cont_w - len(c)))
                mask.append([0] * (prompt_w - len(p)) + [1] * (len(p) + len(c)) + [0] * (cont_w - len(c)))
            ids_t = torch.tensor(ids, device=device)
            mask_t = torch.tensor(mask, device=device)
            hooks = sorted({resolve_hook(model, None, cases[i].sae) for i in rows})
            logits, captured = forward_capturing(model, hooks, self.forward_dtype, input_ids=ids_t,
                                                 attention_mask=mask_t, position_ids=positions(mask_t),
                                                 logits_to_keep=cont_w + 1)
            logits = logits[:, :-1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            targets = ids_t[:, prompt_w:]
            token_lp = logprobs.gather(2, targets[..., None])[..., 0].cpu()
            for row, i in enumerate(rows):
                n = len(cases[i].steered.ids)
                nll[i] = float(-token_lp[row, :n].mean())
                sae = cases[i].sae
                acts = captured[resolve_hook(model, None, sae)][row, prompt_w:prompt_w + n]
                z = sae.encode(acts.to(sae.device, sae.dtype))[:, cases[i].latent]
                fire[i] = float((z > 0).float().mean())
            bar.update(len(rows))
        bar.close()
        return fire, nll


def _unit(cosine: float) -> float:
    """A cosine similarity as a rating in [0, 1] (negative = unrelated = 0; rounding can overshoot 1)."""
    return min(1.0, max(0.0, cosine))


def repetition_rate(ids: Sequence[int], n: int = 3) -> float:
    """Share of the token n-grams that repeat an earlier n-gram of the same text (0: none; near 1: a loop)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


@dataclass
class SteeringTarget:
    """One latent to steer with: its SAE, its top activation, its top contexts; `label` and `group` are yours
    (e.g. the SAE's name and the selection method) and come back in the result.

    `direction` (a control): steer along this vector instead of the latent's decoder row, rescaled to the decoder
    row's norm, while the judge still rates the latent's concept. A random direction there is a known-answer
    control: it should carry the latent's concept no better than chance.
    """

    sae: Any
    latent: int
    max_act: float
    concept_texts: list[str] = field(default_factory=list)
    label: str = ""
    group: str = ""
    direction: torch.Tensor | None = None

    @property
    def key(self) -> tuple:
        """Identifies what is steered: the same SAE object, latent and direction give the same generations."""
        return id(self.sae), int(self.latent), None if self.direction is None else id(self.direction)

    def vector(self, alpha: float) -> torch.Tensor:
        """The steering vector at strength `alpha`: alpha x max activation x the decoder row (or `direction`)."""
        vec = steering_vectors(self.sae, [self.latent], alpha, [self.max_act])[0]
        if self.direction is None:
            return vec
        direction = torch.as_tensor(self.direction, dtype=torch.float32).reshape(-1).cpu()
        if direction.shape != vec.shape or not torch.isfinite(direction).all() or float(direction.norm()) == 0:
            raise ValueError(f"A control direction must be a finite, non-zero vector of {vec.shape[0]} numbers, got "
                             f"shape {tuple(direction.shape)}.")
        row_norm = float(self.sae.W_dec.detach()[self.latent].float().norm())
        return float(alpha) * float(self.max_act) * row_norm * direction / direction.norm()


def rate_rows(model, rows: Sequence[tuple[SteeringTarget, float, int]], prompts: Sequence[str],
              plain: Sequence[Generation], judge: Judge | Callable, *, max_new_tokens: int = 24,
              batch_size: int = 32, progress: bool = False,
              forward_dtype: str | None = None) -> list[tuple[SteeringCase, dict]]:
    """Generate and judge rows of (target, alpha, prompt index), batched per hook (rows may mix SAEs, latents and
    alphas); `plain[p]` is prompt p's unsteered continuation. Returns (case, ratings) per row, in order.
    `forward_dtype`: see `saelab.steering.generate`."""
    generations: list[Generation | None] = [None] * len(rows)
    by_hook: dict[str, list[int]] = {}
    for r, (target, _, _) in enumerate(rows):
        by_hook.setdefault(resolve_hook(model, None, target.sae), []).append(r)
    for hook, members in by_hook.items():
        vectors = torch.stack([rows[r][0].vector(rows[r][1]) for r in members])
        outs = generate(model, [prompts[rows[r][2]] for r in members], max_new_tokens=max_new_tokens, hook=hook,
                        vectors=vectors, batch_size=batch_size, progress=progress, forward_dtype=forward_dtype)
        for r, g in zip(members, outs):
            generations[r] = g
    cases = [SteeringCase(prompts[p], generations[r], plain[p], t.sae, t.latent, a, t.concept_texts)
             for r, (t, a, p) in enumerate(rows)]
    ratings = judge(cases)
    if len(ratings) != len(cases):
        raise ValueError(f"The judge returned {len(ratings)} ratings for {len(cases)} cases.")
    return list(zip(cases, ratings))


def _check_targets(model, targets, prompts, alphas):
    targets = list(targets)
    prompts = check_texts(prompts, name="prompts", purpose="generate from")
    alphas = [check_alpha(a) for a in alphas]
    if not alphas:
        raise ValueError("Give at least one alpha (steering strength) to try.")
    if not targets:
        raise ValueError("No targets to evaluate: give at least one SteeringTarget.")
    for t in targets:
        check_latents(t.sae, [t.latent])
        resolve_hook(model, None, t.sae)
    return targets, prompts, alphas


def evaluate_steering(model, targets: Sequence[SteeringTarget], prompts: Sequence[str], alphas: Sequence[float],
                      judge: Judge | Callable | None = None, *, max_new_tokens: int = 24, batch_size: int = 32,
                      seed: int = 0, progress: bool = True, forward_dtype: str | None = None) -> list[dict[str, Any]]:
    """AxBench's protocol for each target latent: generate at every alpha on a seeded half of the prompts, keep the
    alpha with the best mean steering score, then score that alpha on the other half.

    All targets' generations are batched together (rows may mix latents, SAEs and alphas at one hook). A latent
    given twice (same SAE object, latent and direction, e.g. chosen by two criteria) is evaluated once. Returns
    one dict per target: label, group, latent, alpha (chosen), score (held-out mean), the held-out mean of each
    rating, `held_out` (prompt index -> score), the selection-half means per alpha and their best
    (`selection_best`), and one held-out example. `forward_dtype` is the generations' (see
    `saelab.steering.generate`); the judge has its own.
    """
    targets, prompts, alphas = _check_targets(model, targets, prompts, alphas)
    judge = judge or JudgeFreeJudge(model)
    select, held_out = split_prompts(len(prompts), seed)
    unique: dict[tuple, SteeringTarget] = {}
    for t in targets:
        unique.setdefault(t.key, t)
    keys = list(unique)
    opts = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "forward_dtype": forward_dtype}
    plain = generate(model, prompts, **opts)
    opts["progress"] = progress
    first = iter(rate_rows(model, [(unique[k], a, p) for k in keys for a in alphas for p in select], prompts, plain,
                           judge, **opts))
    chosen = {k: choose_alpha(np.array([[steering_score(next(first)[1]) for _ in select] for _ in alphas]), alphas,
                              range(len(select))) for k in keys}
    second = iter(rate_rows(model, [(unique[k], alphas[chosen[k][0]], p) for k in keys for p in held_out], prompts,
                            plain, judge, **opts))
    results: dict[tuple, dict[str, Any]] = {}
    for key in keys:
        rated = [next(second) for _ in held_out]
        index, means = chosen[key]
        scores = [steering_score(r) for _, r in rated]
        results[key] = {
            "latent": unique[key].latent, "alpha": alphas[index], "score": float(np.mean(scores)),
            **{name: float(np.mean([r[name] for _, r in rated])) for name in RATINGS},
            "held_out": dict(zip(held_out, scores)),
            "selection_scores": dict(zip(alphas, means.tolist())), "selection_best": float(means[index]),
            "example": {"prompt": rated[0][0].prompt, "steered": rated[0][0].steered.text,
                        "unsteered": rated[0][0].unsteered.text},
        }
    return [{"label": t.label, "group": t.group, **results[t.key]} for t in targets]


# ------------------------------------------------------------------------------------------------------------------
# Rank agreement
# ------------------------------------------------------------------------------------------------------------------


def kendall_tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b of x and y along `axis` (any leading axes are batches): (C - D) / sqrt((n0 - n1)(n0 - n2)),
    with n1, n2 the pairs tied in x, in y. NaN where x or y is constant. Agrees with `scipy.stats.kendalltau`."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    i, j = np.triu_indices(x.shape[-1], 1)
    sx, sy = np.sign(x[..., i] - x[..., j]), np.sign(y[..., i] - y[..., j])
    den = np.sqrt(np.abs(sx).sum(-1) * np.abs(sy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / den, np.nan)


def kendall_tau(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                confidence: float | None = None) -> dict[str, float]:
    """Kendall's tau-b between x and y (scipy.stats.kendalltau) with a percentile bootstrap interval over pairs.

    Returns tau, its two-sided p-value, the interval (low, high) at `level` and n. The interval comes from
    `saelab.stats.bootstrap_interval(kendall_tau_b, x, y)` (pairs resampled together); resamples in which one side
    is constant (tau undefined) are dropped. `confidence` is the old name of `level`.
    """
    from scipy.stats import kendalltau

    if confidence is not None:
        warnings.warn("kendall_tau(confidence=) is now level=.", DeprecationWarning, stacklevel=2)
        level = confidence
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of the same length, got {x.shape} and {y.shape}.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        raise ValueError(f"Kendall's tau needs at least 3 finite pairs, got {len(x)}.")
    result = kendalltau(x, y, variant="b")
    est = bootstrap_interval(kendall_tau_b, x, y, level=level, n_resamples=n_boot, seed=seed,
                             batch=max(1, 4_000_000 // (len(x) * (len(x) - 1) // 2)))
    return {"tau": float(result.statistic), "p_value": float(result.pvalue), "low": est.low, "high": est.high,
            "n": len(x)}


__all__ = [
    "EVAL_PROMPTS",
    "Judge",
    "JudgeFreeJudge",
    "RATINGS",
    "SteeringCase",
    "SteeringTarget",
    "choose_alpha",
    "context_coherence",
    "evaluate_steering",
    "harmonic_mean",
    "interpretability_proxies",
    "kendall_tau",
    "kendall_tau_b",
    "rate_rows",
    "repetition_rate",
    "sentence_embeddings",
    "split_prompts",
    "steering_score",
]
