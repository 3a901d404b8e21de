"""notebook 06: Steering with SAE latents: the intervention, batched steered generation, the selection criteria
(methods.md §4); the judge-free steering score and rank agreement live in `saelab.steering_eval`.

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
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saelab.checks import check_alpha, check_latents, check_texts, resolve_hook
from saelab.hf_twin import add_to_residual, plain_route
from saelab.latents import LatentRecords, latent_logits
from saelab.models import keep_kv_cache

NEUTRAL_PROMPT = "From my experience,"
DEFAULT_ALPHA = 10.0
LOGIT_LENS_TOKENS = 20


# ------------------------------------------------------------------------------------------------------------------
# Checks with messages that say what to do
# ------------------------------------------------------------------------------------------------------------------


def hf_model(model):
    """The Hugging Face model under a TransformerLens bridge (`model.original_model`), checked."""
    hf = getattr(model, "original_model", None)
    if hf is None or not hasattr(hf, "generate"):
        raise TypeError("saelab.steering needs a TransformerLens TransformerBridge (from saelab.load_model) whose "
                        "Hugging Face model is `model.original_model`.")
    return hf


def _param(model) -> torch.Tensor:
    return next(model.parameters())


def positions(mask: torch.Tensor) -> torch.Tensor:
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


def check_vectors(model, vectors) -> torch.Tensor:
    """`vectors` as a tensor, checked to be one steering vector [d_model] or one per sequence [batch, d_model]."""
    vectors = torch.as_tensor(vectors).detach()
    d_model = model.cfg.d_model
    if vectors.dim() not in (1, 2) or vectors.shape[-1] != d_model:
        raise ValueError(f"Steering vectors must have shape [{d_model}] or [batch, {d_model}], got "
                         f"{tuple(vectors.shape)}.")
    if not torch.isfinite(vectors).all():
        raise ValueError("The steering vector holds NaN or infinite values; check alpha and the top activations.")
    return vectors


@contextlib.contextmanager
def steer(model, hook: str, vectors: torch.Tensor) -> Iterator[None]:
    """Add `vectors` to the activation at `hook` at every position while the block runs; the hook is always removed.

    `vectors` is one vector [d] for every sequence, or one per sequence of the batch [batch, d]. Inside the block,
    any forward pass (`model(...)`, `model.original_model.generate(...)`) is steered, including tokens generated
    with a KV cache.
    """
    hook = resolve_hook(model, hook)
    param = _param(model)
    vectors = check_vectors(model, vectors).to(param.device, param.dtype)

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
             do_sample: bool = False, temperature: float = 1.0, seed: int = 0, progress: bool = False,
             forward_dtype: str | None = None) -> list[Generation]:
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
        forward_dtype: None runs the model in its own dtype; "bfloat16" runs a bfloat16 copy (`saelab.hf_twin`:
            2-4x faster on a CPU with fast bfloat16 or on a GPU; greedy continuations then differ from float32
            ones now and then). Unsteered or residual-stream generation always runs on the plain Hugging Face
            twin, which skips the bridge's hook points (same numbers, about 1.6x faster on a CPU).
    """
    prompts = check_texts(prompts, name="prompts", purpose="generate from")
    sizes = {"max_new_tokens": max_new_tokens, "batch_size": batch_size}
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1}
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        raise ValueError(f"Got {shown}: max_new_tokens and batch_size must be positive integers.")
    if vectors is not None:
        hook = resolve_hook(model, hook)
        vectors = check_vectors(model, vectors)
        if vectors.dim() == 2 and len(vectors) != len(prompts):
            raise ValueError(f"{len(vectors)} steering vectors for {len(prompts)} prompts; give one per prompt "
                             "(or a single vector for all).")
    hf, tokenizer = hf_model(model), model.tokenizer
    route = plain_route(model, [hook] if vectors is not None else [], forward_dtype)
    if route is None:
        keep_kv_cache(model)  # a bridge booted outside saelab may still lack it
    else:
        hf = route[0]
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
                steering = steer(model, hook, batch_vectors) if route is None else \
                    add_to_residual(*route[1][hook], batch_vectors)
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
    hf = hf_model(model)
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
                top_n: int = 20) -> torch.Tensor:
    """Input score (Arad et al. 2025): the share of a latent's `top_n` top-activating tokens that are among its
    top-`n_tokens` logit-lens tokens (NaN for a latent that never fired on the records' texts)."""
    ids = check_latents(sae, latents)
    lens = logit_lens_tokens(model, sae, ids, n_tokens)
    scores = []
    for latent, promoted in zip(ids, lens.tolist()):
        _, rows, _ = records.top_entries(latent)
        rows = rows[:top_n]
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


__all__ = [
    "DEFAULT_ALPHA", "NEUTRAL_PROMPT", "activation_frequency", "delta_token_confidence", "generate", "Generation",
    "hf_model", "input_score", "logit_lens_tokens", "max_activations", "next_token_logits", "output_score",
    "output_score_from_logits", "positions", "random_score", "select_latents", "selection_scores", "steer",
    "steering_vectors", "token_confidence",
]
