"""notebook 05: PS-Eval: does the top SAE latent at a word separate the word's senses? (arXiv 2501.06254)

Each Word-in-Context (WiC) pair holds two contexts that share a target word, labelled 1 (same sense) or 0
(different senses). PS-Eval turns each context into the prompt ``"{context} The {target_word} means"`` (BOS
prepended), reads the SAE code at the last token of the template's copy of the word, and calls the pair "same"
when both contexts have the same top-1 latent. With positive = same latent:

    label 1 & same = TP    label 1 & different = FN    label 0 & same = FP    label 0 & different = TN

Specificity TN / (TN + FP) is the sense-separation score: how often different senses get different latents. Recall
says how often one sense keeps one latent. A model that always answers "same" has recall 1 and specificity 0.

Faithful mode (the paper's rules) skips pairs whose target is not one token in the prompt and counts them; this
module also counts every other skip (a target missing from its context, an empty word) by reason, never dropping a
pair silently. Variants the paper's reviewers asked for: top-k overlap (Jaccard@k) instead of top-1 identity, a
threshold sweep over a continuous pair score (ROC, AUROC), and reading the word's occurrence in the context instead
of the template copy. Baselines: a randomly initialised SAE of the same shape, and the hook's raw units (argmax over
the model's own dimensions), scored by the same code.

    probe = prepare_pairs(load_task("wordnet-wic").test, model.tokenizer)    # prompts, positions, skips
    acts = extract_probe(model, probe, hooks)                                # one forward pass, every hook
    result = polysemy_eval.evaluate_sae(sae, acts)                           # confusion matrix, metrics

This module builds the probe (prompts, read positions, skips), extracts its activations and holds the decision rule
and its metrics; scoring SAEs and baselines, the bootstrap, the notebook's verdicts and `explain_pair` live in
`saelab.polysemy_eval`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from saelab.activations import extract
from saelab.io import sha256_text
from saelab.tasks import WiCPair

TEMPLATE = "{context} The {target_word} means"
READS = ("template", "context")  # which copy of the word is read: the template's, or the one in the context
_ROW = {"context": 0, "template": 1}  # where each read is stored in ProbeActivations.acts
MULTI_TOKEN = ("skip", "last")  # faithful: skip a multi-token target; "last": read its last token
SCORES = ("jaccard", "cosine")  # continuous pair scores for the threshold sweep
METRICS = ("accuracy", "precision", "recall", "f1", "specificity")
_FIELD = re.compile(r"\{(context|target_word)\}")


# ----------------------------------------------------------------------------------------------------------------
# Pairs -> prompts and the token positions PS-Eval reads
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedPair:
    """A pair left out of the evaluation, and why."""

    index: int  # position in the list given to prepare_pairs
    word: str
    reason: str


class ProbePositions:
    """Position selector for `saelab.extract`: for prompt i, the token positions (context copy, template copy)."""

    def __init__(self, positions: Sequence[tuple[int, int]]):
        self.positions = [tuple(int(p) for p in pair) for pair in positions]

    @property
    def spec(self) -> str:
        return "ps_eval:" + sha256_text(*(f"{a},{b}" for a, b in self.positions))[:16]

    def __call__(self, tokens) -> list[int]:
        return list(self.positions[tokens.index])


@dataclass
class ProbeSet:
    """WiC pairs turned into PS-Eval prompts: two prompts per kept pair, the positions to read, and the skips.

    `prompts[2 * i + c]` is context c (0 or 1) of kept pair i; `positions[...]` its (context copy, template copy)
    token positions (BOS is position 0). `context_split[i, c]` marks a context whose own copy of the word spans
    several tokens (its last token is read in the "context" reading).
    """

    pairs: list[WiCPair]
    pair_index: list[int]  # index of each kept pair in the input list
    prompts: list[str]
    positions: list[tuple[int, int]]
    target_tokens: list[str]  # the token read in the template copy, per kept pair
    context_split: np.ndarray  # [n_pairs, 2] bool
    skipped: list[SkippedPair]
    n_input: int
    template: str = TEMPLATE
    multi_token: str = "skip"

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def labels(self) -> np.ndarray:
        return np.array([p.label for p in self.pairs], dtype=np.int64)

    @property
    def pos(self) -> np.ndarray:
        return np.array([p.pos or "?" for p in self.pairs])

    @property
    def selector(self) -> ProbePositions:
        return ProbePositions(self.positions)

    def skip_counts(self) -> dict[str, int]:
        """Number of skipped pairs per reason (most common first)."""
        return dict(Counter(s.reason for s in self.skipped).most_common())

    def summary(self) -> dict[str, Any]:
        """Pairs given, kept and skipped (by reason); kept pairs by label and by part of speech."""
        labels, pos = self.labels, self.pos
        return {"n_input": self.n_input, "n_kept": len(self), "n_skipped": len(self.skipped),
                "skipped": self.skip_counts(), "same": int((labels == 1).sum()), "different": int((labels == 0).sum()),
                "by_pos": {p: {"same": int(((pos == p) & (labels == 1)).sum()),
                               "different": int(((pos == p) & (labels == 0)).sum())} for p in sorted(set(pos))},
                "context_copy_split": int(self.context_split.any(axis=1).sum()),
                "template": self.template, "multi_token": self.multi_token}

    def __repr__(self) -> str:
        return f"ProbeSet({len(self)} pairs kept of {self.n_input}, skipped {self.skip_counts()})"

    def take(self, mask: Sequence[bool] | np.ndarray) -> ProbeSet:
        """The kept pairs where `mask` (one bool per kept pair) is True, with their prompts and positions; the
        skips and n_input stay those of the whole set."""
        mask = _pair_mask(mask, len(self))
        rows = np.repeat(mask, 2)
        return ProbeSet([p for p, m in zip(self.pairs, mask) if m], [i for i, m in zip(self.pair_index, mask) if m],
                        [t for t, m in zip(self.prompts, rows) if m], [t for t, m in zip(self.positions, rows) if m],
                        [t for t, m in zip(self.target_tokens, mask) if m], self.context_split[mask],
                        list(self.skipped), self.n_input, self.template, self.multi_token)


def _pair_mask(mask: Sequence[bool] | np.ndarray, n: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"mask must be one bool per pair ({n}), got dtype {mask.dtype} and shape {mask.shape}.")
    if not mask.any():
        raise ValueError("The mask keeps no pair: there would be nothing to score.")
    return mask


def render_prompt(template: str, context: str, word: str) -> tuple[str, int, int]:
    """The prompt for one context: (text, where the context starts, where the template's copy of the word starts).

    Placeholders are replaced by position, not with str.format, so braces inside a context are harmless.
    """
    pieces = _FIELD.split(template)
    names = pieces[1::2]
    if sorted(names) != ["context", "target_word"]:
        raise ValueError(f"The template needs exactly one {{context}} and one {{target_word}}; got {template!r}. "
                         f"PS-Eval's template is {TEMPLATE!r}.")
    text, context_start, word_start = "", -1, -1
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            text += piece
        elif piece == "context":
            context_start, text = len(text), text + context
        else:
            word_start, text = len(text), text + word
    return text, context_start, word_start


def find_word(context: str, word: str) -> tuple[int, int] | None:
    """Character span of the first whole-word occurrence of `word` in `context` (case-insensitive), or None."""
    match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", context, flags=re.IGNORECASE)
    return match.span() if match else None


def covering(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Token positions whose character span overlaps [start, end) (special tokens have empty spans)."""
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def _context_span(pair: WiCPair, c: int) -> tuple[int, int] | None:
    """Where the target sits in context c: the pair's own span when it is valid, else the first whole-word match."""
    context = (pair.context_1, pair.context_2)[c]
    span = (pair.span_1, pair.span_2)[c]
    if span is not None and 0 <= span[0] < span[1] <= len(context):
        return int(span[0]), int(span[1])  # hub WiC gives the lemma as `word`: the span marks the inflected form
    return find_word(context, pair.word.strip())


def prepare_pairs(pairs: Sequence[WiCPair], tokenizer, *, template: str = TEMPLATE, multi_token: str = "skip",
                  require_labels: bool = True) -> ProbeSet:
    """Build PS-Eval prompts for WiC pairs and find the tokens to read; skip (and count) pairs that do not fit.

    Skip reasons: "empty target word"; "target absent from context 1/2" (the word, as a whole word, is not in the
    context and the pair gives no span); "multi-token target" (the template's copy of the word is more than one
    token, the paper's faithful rule; pass multi_token="last" to read its last token instead); "target not found
    as a token in the prompt" (no token covers the word, e.g. a tokenizer without character offsets).

    The template copy is located by its exact character span, not by searching for the word: for the target
    "means" the last occurrence of the word in the prompt would be the template's own "means".

    Raises ValueError for an empty list, a bad template, or (with `require_labels`) a label other than 0 / 1.
    """
    example = "e.g. saelab.load_task('wordnet-wic').test"
    try:
        pairs = list(pairs)
    except TypeError:
        raise TypeError(f"prepare_pairs needs WiC pairs, not {pairs!r}: give a list of saelab.WiCPair, {example}.") \
            from None
    if not pairs:
        raise ValueError(f"The pair list is empty: PS-Eval needs WiC pairs, {example}.")
    if multi_token not in MULTI_TOKEN:
        raise ValueError(f"multi_token must be one of {MULTI_TOKEN}, got {multi_token!r}")
    render_prompt(template, "", "x")  # validates the template once, up front
    skipped: list[SkippedPair] = []
    candidates = []  # (input index, pair, [(prompt, context span in prompt, word span in prompt)] * 2)
    for index, pair in enumerate(pairs):
        if not isinstance(pair, WiCPair):
            raise TypeError(f"Item {index} is a {type(pair).__name__}, not a saelab.WiCPair: build pairs with "
                            "saelab.WiCPair(word=..., pos=..., context_1=..., context_2=..., label=...).")
        fields = {"word": pair.word, "context_1": pair.context_1, "context_2": pair.context_2}
        wrong = {k: v for k, v in fields.items() if not isinstance(v, str)}
        if wrong:
            raise TypeError(f"Pair {index} has {', '.join(f'{k}={v!r}' for k, v in wrong.items())}: its word and "
                            "contexts must be strings.")
        if require_labels and pair.label not in (0, 1):
            raise ValueError(f"Pair {index} ({pair.word!r}) has label {pair.label!r}; WiC labels are 1 (same sense) "
                             "or 0 (different senses).")
        word = pair.word.strip()
        if not word:
            skipped.append(SkippedPair(index, pair.word, "empty target word"))
            continue
        rendered = []
        for c, context in enumerate((pair.context_1, pair.context_2)):
            span = _context_span(pair, c)
            if span is None:
                skipped.append(SkippedPair(index, word, f"target absent from context {c + 1}"))
                break
            text, context_start, word_start = render_prompt(template, context, word)
            rendered.append((text, (context_start + span[0], context_start + span[1]),
                             (word_start, word_start + len(word))))
        if len(rendered) == 2:
            candidates.append((index, pair, rendered))

    texts = [r[0] for _, _, rendered in candidates for r in rendered]
    encoded = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True) if texts else {}
    kept, prompts, positions, targets, split = [], [], [], [], []
    for n, (index, pair, rendered) in enumerate(candidates):
        reads, problem = [], None
        for c, (_, context_span, word_span) in enumerate(rendered):
            offsets = [tuple(o) for o in encoded["offset_mapping"][2 * n + c]]
            in_template = covering(offsets, *word_span)
            in_context = covering(offsets, *context_span)
            if not in_template or not in_context:
                problem = "target not found as a token in the prompt"
            elif len(in_template) > 1 and multi_token == "skip":
                problem = "multi-token target"
            if problem:
                break
            reads.append((in_context[-1], in_template[-1], len(in_context) > 1))
        if problem:
            skipped.append(SkippedPair(index, pair.word, problem))
            continue
        kept.append((index, pair))
        prompts += [r[0] for r in rendered]
        positions += [(ctx, tmpl) for ctx, tmpl, _ in reads]
        split.append([s for _, _, s in reads])
        target_id = encoded["input_ids"][2 * n][reads[0][1]]
        targets.append(tokenizer.decode([target_id]))
    return ProbeSet(
        pairs=[p for _, p in kept], pair_index=[i for i, _ in kept], prompts=prompts, positions=positions,
        target_tokens=targets, context_split=np.array(split, dtype=bool).reshape(-1, 2), skipped=skipped,
        n_input=len(pairs), template=template, multi_token=multi_token,
    )


# ----------------------------------------------------------------------------------------------------------------
# Activations of the probe prompts
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ProbeActivations:
    """Activations at the two read positions of every probe prompt, for one or more hooks.

    `pair_acts(hook, read)` gives ``[n_pairs, 2 contexts, d]``; `rows(hook)` every read row (for MSE and L0).
    """

    probe: ProbeSet
    acts: dict[str, torch.Tensor]  # hook -> [n_pairs, 2 contexts, 2 reads (context, template), d]
    meta: dict = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def pair_acts(self, hook: str, read: str = "template") -> torch.Tensor:
        if read not in READS:
            raise ValueError(f"read must be one of {READS}, got {read!r}")
        if hook not in self.acts:
            raise KeyError(f"No probe activations for hook {hook!r}; extracted: {self.hooks}. Add it to the "
                           "hooks of extract_probe.")
        return self.acts[hook][:, :, _ROW[read]]

    def rows(self, hook: str) -> torch.Tensor:
        x = self.acts[hook]
        return x.reshape(-1, x.shape[-1])

    def take(self, mask: Sequence[bool] | np.ndarray) -> ProbeActivations:
        """The activations of the pairs where `mask` is True (e.g. a filtered pair set), without a new forward pass."""
        mask = _pair_mask(mask, len(self.probe))
        index = torch.as_tensor(np.flatnonzero(mask))
        return ProbeActivations(self.probe.take(mask), {h: x[index] for h, x in self.acts.items()}, dict(self.meta))


def extract_probe(model, probe: ProbeSet, hooks: str | Sequence[str], *, cache: bool = True, batch_size: int = 32,
                  dataset: str | None = None, progress: bool = True) -> ProbeActivations:
    """Run the probe prompts through `model` once and keep every hook's activations at the read positions."""
    if len(probe) == 0:
        raise ValueError(f"No pair is left to evaluate: all {probe.n_input} were skipped ({probe.skip_counts()}); "
                         "check that each word occurs in both contexts as a whole word, or pass "
                         "multi_token='last' to prepare_pairs for words of several tokens.")
    # the read positions must survive extract's truncation (512 tokens by default), however long a context is
    max_length = max(512, 1 + max(max(pair) for pair in probe.positions))
    acts = extract(model, probe.prompts, hooks, pooling="none", positions=probe.selector, cache=cache,
                   batch_size=batch_size, dataset=dataset or "ps-eval", progress=progress, max_length=max_length)
    if not bool((acts.lengths == 2).all()):
        raise RuntimeError("Expected two read positions per prompt; the tokenizer used by prepare_pairs must be "
                           "the model's own.")
    # extract keeps positions in token order; store the context copy first whatever the template's layout
    flipped = torch.tensor([ctx > tmpl for ctx, tmpl in probe.positions]).reshape(len(probe), 2)
    shaped = {}
    for h in acts.hooks:
        x = acts[h].reshape(len(probe), 2, 2, -1)
        shaped[h] = torch.where(flipped[:, :, None, None], x.flip(2), x)
    return ProbeActivations(probe, shaped, dict(acts.meta))


# ----------------------------------------------------------------------------------------------------------------
# The decision rule and the metrics
# ----------------------------------------------------------------------------------------------------------------


def top_latents(codes: torch.Tensor, k: int = 1, require_active: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and values of the k largest entries of each code [..., d]; id -1 where the value is not > 0.

    `require_active=False` keeps plain argmax ids (raw model units, which can be negative).
    """
    values, ids = codes.float().topk(min(k, codes.shape[-1]), dim=-1)
    if require_active:
        ids = torch.where(values > 0, ids, torch.full_like(ids, -1))
    return ids, values


def confusion(labels: Sequence[int] | np.ndarray, same: Sequence[bool] | np.ndarray) -> dict[str, int]:
    """The PS-Eval confusion matrix, positive = "same latent": {"tp", "fn", "fp", "tn"}."""
    labels, same = np.asarray(labels), np.asarray(same)
    if labels.shape != same.shape or labels.ndim != 1:
        raise ValueError(f"labels and decisions must be 1-D and of equal length, got {labels.shape} and {same.shape}")
    if len(labels) == 0:
        raise ValueError("No pairs to score: the confusion matrix of nothing is undefined.")
    if not np.isin(labels, (0, 1)).all():
        others = sorted(set(labels[~np.isin(labels, (0, 1))].tolist()))
        raise ValueError(f"labels must be 0 (different senses) or 1 (same sense); got also {others}")
    same = same.astype(bool)
    one = labels == 1
    return {"tp": int((one & same).sum()), "fn": int((one & ~same).sum()),
            "fp": int((~one & same).sum()), "tn": int((~one & ~same).sum())}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def metrics_from_confusion(cm: dict[str, int]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and specificity; NaN where a ratio has nothing to count."""
    tp, fn, fp, tn = cm["tp"], cm["fn"], cm["fp"], cm["tn"]
    return {"accuracy": _ratio(tp + tn, tp + fn + fp + tn), "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn), "specificity": _ratio(tn, tn + fp)}


def jaccard_at_k(codes_1: torch.Tensor, codes_2: torch.Tensor, k: int, require_active: bool = True) -> np.ndarray:
    """Per pair, |A ∩ B| / |A ∪ B| of the two codes' top-k latents (only active ones); 0 when both are empty."""
    ids_1, _ = top_latents(codes_1, k, require_active)
    ids_2, _ = top_latents(codes_2, k, require_active)
    out = np.zeros(len(ids_1))
    for i, (a, b) in enumerate(zip(ids_1.tolist(), ids_2.tolist())):
        a, b = set(a) - {-1}, set(b) - {-1}
        out[i] = len(a & b) / len(a | b) if a | b else 0.0
    return out


def code_cosine(codes_1: torch.Tensor, codes_2: torch.Tensor) -> np.ndarray:
    """Per pair, the cosine similarity of the two codes (0 when one is all zeros)."""
    a, b = codes_1.double(), codes_2.double()
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cos = (a * b).sum(-1) / norms.clamp_min(1e-30)
    return torch.where(norms > 0, cos, torch.zeros_like(cos)).numpy()


@dataclass
class RocCurve:
    fpr: np.ndarray  # 1 - specificity
    tpr: np.ndarray  # recall
    thresholds: np.ndarray
    auroc: float


def roc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> RocCurve:
    """ROC of "same sense" against a pair score (higher = more alike): scikit-learn's roc_curve and roc_auc_score."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(set(labels.tolist())) < 2:
        found = f"only label {labels[0]}" if len(labels) else "no pairs"
        raise ValueError(f"A ROC curve needs pairs of both labels (same and different sense); got {found}.")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    return RocCurve(fpr, tpr, thresholds, float(roc_auc_score(labels, scores)))


__all__ = [
    "METRICS",
    "READS",
    "TEMPLATE",
    "ProbeActivations",
    "ProbePositions",
    "ProbeSet",
    "RocCurve",
    "SkippedPair",
    "code_cosine",
    "confusion",
    "covering",
    "extract_probe",
    "find_word",
    "jaccard_at_k",
    "metrics_from_confusion",
    "prepare_pairs",
    "render_prompt",
    "roc",
    "top_latents",
]
