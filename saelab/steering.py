"""Steering with SAE latents: the intervention, batched steered generation, feature-selection criteria, a judge-free
steering score and rank agreement between interpretability and steering utility (methods.md §4).

Steering latent j with strength alpha adds

    alpha * max_activation(j) * W_dec[j]

to the residual stream at the SAE's hook, at every position: the prompt's tokens and every generated token.

    vectors = steering_vectors(sae, [j], [10.0], records)            # [1, d_model]
    with steer(model, sae.cfg.hook_name, vectors[0]):                 # the hook is removed on exit, always
        logits = model("From my experience,")
    generate(model, prompts, hook=sae.cfg.hook_name, vectors=rows)    # one vector per prompt, batched

Generation runs Hugging Face's `generate` (KV cache, left padding, attention mask) on the bridge's own Hugging Face
model. The bridge's blocks *are* that model's decoder layers, so the steering hook on `blocks.{L}.hook_resid_post`
fires at every step, and prompts of one batch can each carry a different vector (a different latent or alpha).

Selection criteria map (model, SAE, latents) to one score per latent:

    output_score            Arad et al. 2025: (1 - rank / vocab) * probability of the best-ranked of the latent's
                            top-20 logit-lens tokens after amplifying it (10x its top activation) on a neutral prompt
    input_score             Arad et al. 2025: share of its top-activating tokens among its top-20 logit-lens tokens
    delta_token_confidence  arXiv 2510.03659: C_k(steered) - C_k(unsteered), C_k = -(1/k) sum log top-k probabilities
    random_score, activation_frequency   baselines

The steering score follows AxBench's recipe with a pluggable judge: each steered continuation gets concept,
fluency and relevance ratings in [0, 1], combined by a harmonic mean that is zero when any rating is zero; the
steering strength is chosen on half the prompts and the score reported on the other half. `JudgeFreeJudge` rates
without an LLM: concept from the latent firing when the text is re-encoded plus sentence-encoder similarity to
the latent's top contexts, fluency from perplexity under the unsteered model and repetition, relevance from
sentence-encoder similarity to the unsteered answer.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import random as _random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from saelab.checks import check_alpha, check_latents, check_texts, resolve_hook
from saelab.concept_metrics import encode_sentences, load_sentence_encoder, mean_pairwise_cosine
from saelab.latents import LatentRecords, latent_logits
from saelab.models import keep_kv_cache

NEUTRAL_PROMPT = "From my experience,"
DEFAULT_ALPHA = 10.0
LOGIT_LENS_TOKENS = 20
RATINGS = ("concept", "fluency", "relevance")


# ------------------------------------------------------------------------------------------------------------------
# Checks with messages that say what to do
# ------------------------------------------------------------------------------------------------------------------


def _hf_model(model):
    hf = getattr(model, "original_model", None)
    if hf is None or not hasattr(hf, "generate"):
        raise TypeError("saelab.steering needs a TransformerLens TransformerBridge (from saelab.load_model) whose "
                        "Hugging Face model is `model.original_model`.")
    return hf


def _param(model) -> torch.Tensor:
    return next(model.parameters())


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding (what `generate` uses), for direct forward passes."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# ------------------------------------------------------------------------------------------------------------------
# The intervention
# ------------------------------------------------------------------------------------------------------------------


def max_activations(source, latents: Sequence[int]) -> torch.Tensor:
    """Each latent's top activation, from `LatentRecords` (tracking those latents) or a tensor indexed by latent."""
    if isinstance(source, LatentRecords):
        return torch.tensor([float(source.max_act[source.position(j)]) for j in latents])
    hint = "give one per latent, or a tensor over all latents (e.g. records.max_act)"
    try:
        values = torch.as_tensor(source, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"Top activations must be LatentRecords or numbers, not {source!r}: {hint}.") from None
    if len(values) == len(latents):
        return values
    if len(latents) and max(int(j) for j in latents) >= len(values):
        raise ValueError(f"Got {len(values)} top activations for latents {[int(j) for j in latents]}: {hint}.")
    return values[torch.as_tensor(list(latents), dtype=torch.long)]


def steering_vectors(sae, latents: int | Sequence[int], alphas: float | Sequence[float], max_acts) -> torch.Tensor:
    """alpha * max_activation(j) * W_dec[j] for each (latent, alpha) pair: [n, d_in].

    `alphas` is one number for every latent or one per latent; `max_acts` is `LatentRecords` tracking the latents,
    or their top activations (one per latent, or a tensor over all latents).
    """
    ids = check_latents(sae, latents)
    if not ids:
        raise ValueError(f"No latents to steer with: give at least one latent id (0 to {sae.cfg.d_sae - 1}).")
    one_alpha = isinstance(alphas, str) or not isinstance(alphas, (Sequence, np.ndarray, torch.Tensor))
    alpha_list = [alphas] * len(ids) if one_alpha else list(alphas)
    if len(alpha_list) != len(ids):
        raise ValueError(f"Got {len(alpha_list)} alphas for {len(ids)} latents; give one alpha, or one per latent.")
    alpha_t = torch.tensor([check_alpha(a) for a in alpha_list], dtype=torch.float32)
    tops = max_activations(max_acts, ids).float()
    if not torch.isfinite(tops).all() or (tops < 0).any():
        raise ValueError(f"Top activations must be finite and non-negative, got {tops.tolist()}; check max_acts "
                         "(e.g. records.max_act from saelab.latents.latent_records).")
    rows = sae.W_dec.detach()[torch.as_tensor(ids, dtype=torch.long, device=sae.W_dec.device)].float().cpu()
    return (alpha_t * tops)[:, None] * rows


@contextlib.contextmanager
def steer(model, hook: str, vectors: torch.Tensor) -> Iterator[None]:
    """Add `vectors` to the activation at `hook` at every position while the block runs; the hook is always removed.

    `vectors` is one vector [d] for every sequence, or one per sequence of the batch [batch, d]. Inside the block,
    any forward pass (`model(...)`, `model.original_model.generate(...)`) is steered, including tokens generated
    with a KV cache.
    """
    hook = resolve_hook(model, hook)
    param = _param(model)
    vectors = torch.as_tensor(vectors).detach().to(param.device, param.dtype)
    d_model = model.cfg.d_model
    if vectors.dim() not in (1, 2) or vectors.shape[-1] != d_model:
        raise ValueError(f"Steering vectors must have shape [{d_model}] or [batch, {d_model}], got "
                         f"{tuple(vectors.shape)}.")
    if not torch.isfinite(vectors).all():
        raise ValueError("The steering vector holds NaN or infinite values; check alpha and the top activations.")

    def add(activation: torch.Tensor, hook=None) -> torch.Tensor:
        if vectors.dim() == 1:
            return activation + vectors
        if activation.shape[0] != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} steering vectors for a batch of {activation.shape[0]} sequences; "
                             "give one vector per sequence, or a single vector.")
        return activation + vectors.reshape(vectors.shape[0], *([1] * (activation.dim() - 2)), -1)

    with model.hooks(fwd_hooks=[(hook, add)]):
        yield


# ------------------------------------------------------------------------------------------------------------------
# Batched generation
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """One continuation: the prompt, its token ids (with BOS), the generated ids (EOS and padding removed), the text."""

    prompt: str
    prompt_ids: list[int]
    ids: list[int]
    text: str

    def __repr__(self) -> str:
        return f"Generation({self.prompt!r} -> {self.text!r})"


def _generation_config(hf, tokenizer, max_new_tokens: int, min_new_tokens: int, do_sample: bool, temperature: float):
    config = copy.deepcopy(hf.generation_config)
    config.max_new_tokens = int(max_new_tokens)
    config.min_new_tokens = int(min_new_tokens)
    config.max_length = None
    config.do_sample = bool(do_sample)
    config.num_beams = 1
    config.top_k = None
    config.top_p = None
    config.temperature = float(temperature) if do_sample else None
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def _eos_ids(config) -> set[int]:
    eos = config.eos_token_id
    return set() if eos is None else {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


@torch.no_grad()
def generate(model, prompts: Sequence[str], *, max_new_tokens: int = 32, hook: str | None = None,
             vectors: torch.Tensor | None = None, batch_size: int = 32, min_new_tokens: int = 0,
             do_sample: bool = False, temperature: float = 1.0, seed: int = 0,
             progress: bool = False) -> list[Generation]:
    """Continue each prompt, batched (left padding + attention mask, KV cache), optionally steered.

    Args:
        prompts: the prompts; each gives one `Generation`, in the same order.
        max_new_tokens: tokens to generate at most (generation stops at EOS).
        hook, vectors: steer at `hook` with one vector [d] for every prompt or one per prompt [n_prompts, d]
            (see `steering_vectors`); None generates unsteered.
        batch_size: prompts per `generate` call. On CPU one decoding step costs about the same for 8 rows as for
            32 (it reads every weight once), so large batches are much faster per token.
        min_new_tokens: force at least this many tokens (benchmarks use it so every row generates the same amount).
        do_sample, temperature, seed: greedy decoding by default; sampling is seeded.
    """
    prompts = check_texts(prompts, name="prompts", purpose="generate from")
    sizes = {"max_new_tokens": max_new_tokens, "batch_size": batch_size}
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1}
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        raise ValueError(f"Got {shown}: max_new_tokens and batch_size must be positive integers.")
    if vectors is not None:
        hook = resolve_hook(model, hook)
        vectors = torch.as_tensor(vectors)
        if vectors.dim() == 2 and len(vectors) != len(prompts):
            raise ValueError(f"{len(vectors)} steering vectors for {len(prompts)} prompts; give one per prompt "
                             "(or a single vector for all).")
    hf, tokenizer = _hf_model(model), model.tokenizer
    keep_kv_cache(model)  # a bridge booted outside saelab may still lack it
    config = _generation_config(hf, tokenizer, max_new_tokens, min(min_new_tokens, max_new_tokens), do_sample,
                                temperature)
    stop = _eos_ids(config) | ({config.pad_token_id} if config.pad_token_id is not None else set())
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
    results: dict[int, Generation] = {}
    device = _param(model).device
    # sampling is seeded inside a forked random state, so the caller's torch RNG is left as it was
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if do_sample \
        else contextlib.nullcontext()
    with rng:
        if do_sample:
            torch.manual_seed(seed)
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            pad = config.pad_token_id
            ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in rows], device=device)
            mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in rows], device=device)
            steering = contextlib.nullcontext()
            if vectors is not None:
                batch_vectors = vectors if vectors.dim() == 1 else vectors[torch.as_tensor(rows)]
                steering = steer(model, hook, batch_vectors)
            with steering:
                out = hf.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for row, i in enumerate(rows):
                new = []
                for token in out[row, width:].tolist():
                    if token in stop:
                        break
                    new.append(token)
                results[i] = Generation(prompts[i], list(encoded[i]), new,
                                        tokenizer.decode(new, skip_special_tokens=True))
            bar.update(len(rows))
        bar.close()
    return [results[i] for i in range(len(prompts))]


# ------------------------------------------------------------------------------------------------------------------
# Next-token distributions on a prompt, steered by many latents at once
# ------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def next_token_logits(model, prompt: str, *, hook: str | None = None, vectors: torch.Tensor | None = None,
                      batch_size: int = 64) -> torch.Tensor:
    """Next-token logits after `prompt`: [vocab] unsteered, or [n, vocab] with one steering vector per row."""
    prompt = check_texts([prompt], name="prompts", purpose="generate from")[0]
    hf = _hf_model(model)
    device = _param(model).device
    ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=True)["input_ids"]], device=device)
    if vectors is None:
        return hf(input_ids=ids, logits_to_keep=1).logits[0, -1].float().cpu()
    hook = resolve_hook(model, hook)
    vectors = torch.as_tensor(vectors)
    vectors = vectors[None] if vectors.dim() == 1 else vectors
    out = []
    for start in range(0, len(vectors), batch_size):
        chunk = vectors[start:start + batch_size]
        with steer(model, hook, chunk):
            logits = hf(input_ids=ids.expand(len(chunk), -1), logits_to_keep=1).logits[:, -1]
        out.append(logits.float().cpu())
    return torch.cat(out)


def _check_top_k(k: Any, vocab: int | None = None) -> int:
    """k of C_k: a positive integer, at most the vocabulary size when it is known."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if vocab is not None and k > vocab:
        raise ValueError(f"k={k} exceeds the {vocab:,} tokens of the vocabulary: choose k between 1 and {vocab}.")
    return int(k)


def token_confidence(logits: torch.Tensor, k: int = 1) -> torch.Tensor:
    """C_k = -(1/k) * sum of the log probabilities of the k most likely next tokens (per row of logits)."""
    _check_top_k(k, logits.shape[-1])
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return -logprobs.topk(k, dim=-1).values.mean(-1)


def _amplified(model, sae, latents, max_acts, prompt: str, alpha: float, batch_size: int) -> torch.Tensor:
    hook = resolve_hook(model, None, sae)
    vectors = steering_vectors(sae, latents, alpha, max_acts)
    return next_token_logits(model, prompt, hook=hook, vectors=vectors, batch_size=batch_size)


# ------------------------------------------------------------------------------------------------------------------
# Selection criteria: (model, sae, latents) -> one score per latent
# ------------------------------------------------------------------------------------------------------------------


def logit_lens_tokens(model, sae, latents: Sequence[int], n: int = LOGIT_LENS_TOKENS) -> torch.Tensor:
    """The n tokens each latent's decoder row promotes most through the final norm and unembedding: [len, n]."""
    ids = check_latents(sae, latents)
    vocab = getattr(getattr(model, "cfg", None), "d_vocab", None) or float("inf")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= vocab:
        raise ValueError(f"n={n!r} logit-lens tokens per latent: choose n between 1 and {vocab} (the vocabulary).")
    return latent_logits(model, sae, ids).topk(n, dim=-1).indices


def output_score_from_logits(steered_logits: torch.Tensor, lens_tokens: torch.Tensor) -> torch.Tensor:
    """Arad et al.'s output score from steered next-token logits [n, vocab] and logit-lens tokens [n, m].

    Among the m tokens, take the one ranked best in the steered distribution (rank 0 = most likely):
    score = (1 - rank / vocab) * its probability.
    """
    probs = torch.softmax(steered_logits.float(), dim=-1)
    lens_probs = probs.gather(1, lens_tokens.to(probs.device))
    best = lens_probs.max(dim=1).values
    rank = (probs > best[:, None]).sum(dim=1).float()  # tokens more likely than the best lens token
    return (1 - rank / probs.shape[1]) * best


def output_score(model, sae, latents: Sequence[int], max_acts, *, prompt: str = NEUTRAL_PROMPT,
                 alpha: float = DEFAULT_ALPHA, n_tokens: int = LOGIT_LENS_TOKENS, batch_size: int = 64) -> torch.Tensor:
    """Output score (Arad et al. 2025) of each latent: amplify it (alpha x its top activation) on `prompt`, then
    score how likely its top-`n_tokens` logit-lens tokens become (see `output_score_from_logits`)."""
    ids = check_latents(sae, latents)
    steered = _amplified(model, sae, ids, max_acts, prompt, check_alpha(alpha), batch_size)
    return output_score_from_logits(steered, logit_lens_tokens(model, sae, ids, n_tokens))


def delta_token_confidence(model, sae, latents: Sequence[int], max_acts, *, k: int = 1, prompt: str = NEUTRAL_PROMPT,
                           alpha: float = DEFAULT_ALPHA, batch_size: int = 64) -> torch.Tensor:
    """Delta Token Confidence (arXiv 2510.03659): C_k(steered) - C_k(unsteered) on `prompt` (alpha=10, k=1 default).

    Positive: amplifying the latent makes the model less sure of its next token; negative: surer.
    """
    _check_top_k(k, getattr(getattr(model, "cfg", None), "d_vocab", None))  # before the forward passes
    ids = check_latents(sae, latents)
    steered = _amplified(model, sae, ids, max_acts, prompt, check_alpha(alpha), batch_size)
    plain = next_token_logits(model, prompt)
    return token_confidence(steered, k) - token_confidence(plain[None], k)


def selection_scores(model, sae, latents: Sequence[int], max_acts, *, k: int = 1, prompt: str = NEUTRAL_PROMPT,
                     alpha: float = DEFAULT_ALPHA, n_tokens: int = LOGIT_LENS_TOKENS,
                     batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Output score and Delta Token Confidence from one set of amplified forward passes (they share them)."""
    ids = check_latents(sae, latents)
    steered = _amplified(model, sae, ids, max_acts, prompt, check_alpha(alpha), batch_size)
    plain = next_token_logits(model, prompt)
    return {"output_score": output_score_from_logits(steered, logit_lens_tokens(model, sae, ids, n_tokens)),
            "delta_token_confidence": token_confidence(steered, k) - token_confidence(plain[None], k)}


def input_score(model, sae, latents: Sequence[int], records, *, n_tokens: int = LOGIT_LENS_TOKENS,
                n_top: int = 20) -> torch.Tensor:
    """Input score (Arad et al. 2025): the share of a latent's `n_top` top-activating tokens that are among its
    top-`n_tokens` logit-lens tokens (NaN for a latent that never fired on the records' texts)."""
    ids = check_latents(sae, latents)
    lens = logit_lens_tokens(model, sae, ids, n_tokens)
    scores = []
    for latent, promoted in zip(ids, lens.tolist()):
        _, rows, _ = records.top_entries(latent)
        rows = rows[:n_top]
        if len(rows) == 0:
            scores.append(float("nan"))
            continue
        top_tokens = records.token_ids[rows].tolist()
        promoted = set(promoted)
        scores.append(sum(t in promoted for t in top_tokens) / len(top_tokens))
    return torch.tensor(scores)


def activation_frequency(model, sae, latents: Sequence[int], records) -> torch.Tensor:
    """Baseline: the share of tokens each latent fires on (from `records`)."""
    ids = check_latents(sae, latents)
    return torch.tensor([records.density(j) for j in ids], dtype=torch.float64).float()


def random_score(model, sae, latents: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Baseline: a seeded random score per latent (ranking by it is a random selection)."""
    ids = check_latents(sae, latents)
    return torch.rand(len(ids), generator=torch.Generator().manual_seed(seed))


def select_latents(latents: Sequence[int], scores: torch.Tensor, n: int, mode: str = "top") -> list[int]:
    """The `n` latents a criterion keeps.

    mode "top": the n highest scores. "tails": the top tier in each direction, as for Delta Token Confidence:
    the ceil(n/2) most positive and the floor(n/2) most negative (each ranked by |score|).
    NaN scores are never selected.
    """
    latents = list(latents)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if len(latents) != len(scores):
        raise ValueError(f"{len(latents)} latents but {len(scores)} scores: give one score per latent.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: the number of latents to keep must be a positive integer.")
    valid = [i for i in range(len(latents)) if math.isfinite(float(scores[i]))]
    if mode == "top":
        chosen = sorted(valid, key=lambda i: -float(scores[i]))[:n]
    elif mode == "tails":
        positive = sorted([i for i in valid if scores[i] > 0], key=lambda i: -float(scores[i]))
        negative = sorted([i for i in valid if scores[i] < 0], key=lambda i: float(scores[i]))
        n_pos = min(len(positive), (n + 1) // 2)
        n_neg = min(len(negative), n - n_pos)
        n_pos = min(len(positive), n - n_neg)  # one tail too short: fill from the other
        chosen = positive[:n_pos] + negative[:n_neg]
    else:
        raise ValueError(f"mode must be 'top' or 'tails', got {mode!r}.")
    return [latents[i] for i in chosen]


# ------------------------------------------------------------------------------------------------------------------
# Judge-free interpretability proxies
# ------------------------------------------------------------------------------------------------------------------


def sentence_embeddings(texts: Sequence[str], encoder=None) -> torch.Tensor:
    """Unit-length all-MiniLM-L6-v2 embeddings [n, d] (`saelab.concept_metrics.encode_sentences`); the encoder is
    loaded once per process when none is given."""
    texts = list(texts)
    encoder = encoder or _default_encoder()
    if not texts:
        return torch.zeros(0, encoder.get_sentence_embedding_dimension())
    return torch.from_numpy(encode_sentences(texts, encoder, progress=False)).float()


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

    A continuation with no tokens rates 0 everywhere.
    """

    def __init__(self, model, encoder=None, *, ppl_fluent: float = 10.0, ppl_broken: float = 1000.0, ngram: int = 3,
                 with_prompt: bool = True, batch_size: int = 16, progress: bool = False):
        if not 1 <= ppl_fluent < ppl_broken:
            raise ValueError(f"Got ppl_fluent={ppl_fluent}, ppl_broken={ppl_broken}. Need 1 <= ppl_fluent < "
                             "ppl_broken.")
        self.model, self.encoder = model, encoder or _default_encoder()
        self.ppl_fluent, self.ppl_broken, self.ngram = ppl_fluent, ppl_broken, ngram
        self.with_prompt = with_prompt
        self.batch_size, self.progress = batch_size, progress
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
        hf, device = _hf_model(model), _param(model).device
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
            captured: dict[str, torch.Tensor] = {}
            hooks = sorted({resolve_hook(model, None, cases[i].sae) for i in rows})

            def capture(activation, hook, name, store=captured):
                store[name] = activation.detach()

            with model.hooks(fwd_hooks=[(h, functools.partial(capture, name=h)) for h in hooks]):
                logits = hf(input_ids=ids_t, attention_mask=mask_t, position_ids=_positions(mask_t),
                            logits_to_keep=cont_w + 1).logits[:, :-1]
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
    (e.g. the SAE's name and the selection method) and come back in the result."""

    sae: Any
    latent: int
    max_act: float
    concept_texts: list[str] = field(default_factory=list)
    label: str = ""
    group: str = ""


def evaluate_steering(model, targets: Sequence[SteeringTarget], prompts: Sequence[str], alphas: Sequence[float],
                      judge: Judge | Callable | None = None, *, max_new_tokens: int = 24, batch_size: int = 32,
                      seed: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """AxBench's protocol for each target latent: generate at every alpha on a seeded half of the prompts, keep the
    alpha with the best mean steering score, then score that alpha on the other half.

    All targets' generations are batched together (rows may mix latents, SAEs and alphas at one hook). A latent
    given twice (same SAE object and latent, e.g. chosen by two criteria) is evaluated once. Returns one dict
    per target: label, group, latent, alpha (chosen), score (held-out mean), the held-out mean of each rating,
    the selection-half means per alpha, and one held-out example.
    """
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
    judge = judge or JudgeFreeJudge(model)
    select, held_out = split_prompts(len(prompts), seed)
    unique: dict[tuple[int, int], SteeringTarget] = {}
    for t in targets:
        unique.setdefault((id(t.sae), t.latent), t)
    keys = list(unique)
    plain = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)

    def run(rows: list[tuple[tuple[int, int], float, int]]) -> list[tuple[SteeringCase, dict]]:
        """Generate and judge rows of (target key, alpha, prompt index); returns the judge's ratings per row."""
        generations: list[Generation | None] = [None] * len(rows)
        by_hook: dict[str, list[int]] = {}
        for r, (key, _, _) in enumerate(rows):
            by_hook.setdefault(resolve_hook(model, None, unique[key].sae), []).append(r)
        for hook, members in by_hook.items():
            vectors = torch.stack([steering_vectors(unique[rows[r][0]].sae, [unique[rows[r][0]].latent],
                                                    rows[r][1], [unique[rows[r][0]].max_act])[0] for r in members])
            outs = generate(model, [prompts[rows[r][2]] for r in members], max_new_tokens=max_new_tokens,
                            hook=hook, vectors=vectors, batch_size=batch_size, progress=progress)
            for r, g in zip(members, outs):
                generations[r] = g
        cases = [SteeringCase(prompts[p], generations[r], plain[p], unique[key].sae, unique[key].latent, a,
                              unique[key].concept_texts) for r, (key, a, p) in enumerate(rows)]
        ratings = judge(cases)
        if len(ratings) != len(cases):
            raise ValueError(f"The judge returned {len(ratings)} ratings for {len(cases)} cases.")
        return list(zip(cases, ratings))

    first = run([(key, a, p) for key in keys for a in alphas for p in select])
    chosen: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    it = iter(first)
    for key in keys:
        grid = np.array([[steering_score(next(it)[1]) for _ in select] for _ in alphas])
        chosen[key] = choose_alpha(grid, alphas, range(len(select)))
    second = run([(key, alphas[chosen[key][0]], p) for key in keys for p in held_out])
    results: dict[tuple[int, int], dict[str, Any]] = {}
    it2 = iter(second)
    for key in keys:
        rated = [next(it2) for _ in held_out]
        index, means = chosen[key]
        results[key] = {
            "latent": unique[key].latent, "alpha": alphas[index],
            "score": float(np.mean([steering_score(r) for _, r in rated])),
            **{name: float(np.mean([r[name] for _, r in rated])) for name in RATINGS},
            "selection_scores": dict(zip(alphas, means.tolist())),
            "example": {"prompt": rated[0][0].prompt, "steered": rated[0][0].steered.text,
                        "unsteered": rated[0][0].unsteered.text},
        }
    return [{"label": t.label, "group": t.group, **results[(id(t.sae), t.latent)]} for t in targets]


# ------------------------------------------------------------------------------------------------------------------
# Rank agreement
# ------------------------------------------------------------------------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> dict[str, float]:
    """Kendall's tau-b between x and y (scipy.stats.kendalltau) with a percentile bootstrap interval over pairs.

    Returns tau, its two-sided p-value, the interval (low, high) and n. Resamples in which one side is constant
    (tau undefined) are skipped.
    """
    from scipy.stats import kendalltau

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and of the same length, got {x.shape} and {y.shape}.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        raise ValueError(f"Kendall's tau needs at least 3 finite pairs, got {len(x)}.")
    result = kendalltau(x, y, variant="b")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if np.ptp(x[idx]) == 0 or np.ptp(y[idx]) == 0:
            continue
        boots.append(kendalltau(x[idx], y[idx], variant="b").statistic)
    tail = (1 - confidence) / 2
    low, high = (np.quantile(boots, [tail, 1 - tail]) if boots else (float("nan"), float("nan")))
    return {"tau": float(result.statistic), "p_value": float(result.pvalue), "low": float(low), "high": float(high),
            "n": len(x)}


__all__ = [
    "DEFAULT_ALPHA", "NEUTRAL_PROMPT", "activation_frequency", "choose_alpha", "context_coherence",
    "delta_token_confidence", "evaluate_steering", "generate", "Generation", "harmonic_mean", "input_score",
    "interpretability_proxies", "Judge", "JudgeFreeJudge", "kendall_tau", "logit_lens_tokens", "max_activations",
    "next_token_logits", "output_score", "output_score_from_logits", "random_score", "repetition_rate",
    "select_latents", "selection_scores", "sentence_embeddings", "split_prompts", "steer", "steering_score",
    "steering_vectors", "SteeringCase", "SteeringTarget", "token_confidence",
]
