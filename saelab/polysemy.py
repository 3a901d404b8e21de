"""PS-Eval: does the top SAE latent at a word separate the word's senses? (arXiv 2501.06254)

Each Word-in-Context (WiC) pair holds two contexts that share a target word, labelled 1 (same sense) or 0
(different senses). PS-Eval turns each context into the prompt ``"{context} The {target_word} means"`` (BOS
prepended), reads the SAE code at the last token of the template's copy of the word, and calls the pair "same"
when both contexts have the same top-1 latent. With positive = same latent:

    label 1 & same = TP    label 1 & different = FN    label 0 & same = FP    label 0 & different = TN

Specificity TN / (TN + FP) is the sense-separation score: how often different senses get different latents. Recall
says how often one sense keeps one latent. A model that always answers "same" has recall 1 and specificity 0.

Faithful mode (the anchor's rules) skips pairs whose target is not one token in the prompt and counts them; this
module also counts every other skip (a target missing from its context, an empty word) by reason, never dropping a
pair silently. Variants the anchor's reviewers asked for: top-k overlap (Jaccard@k) instead of top-1 identity, a
threshold sweep over a continuous pair score (ROC, AUROC), and reading the word's occurrence in the context instead
of the template copy. Baselines: a randomly initialised SAE of the same shape, and the hook's raw units (argmax over
the model's own dimensions), scored by the same code.

    probe = prepare_pairs(load_task("wordnet-wic").test, model.tokenizer)    # prompts, positions, skips
    acts = extract_probe(model, probe, hooks)                                # one forward pass, every hook
    result = evaluate_sae(sae, acts)                                         # confusion matrix, metrics
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from saelab.activations import extract
from saelab.io import sha256_text
from saelab.metrics import core_metrics
from saelab.sae import SAE
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


def _covering(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
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
    token, the anchor's faithful rule; pass multi_token="last" to read its last token instead); "target not found
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
            in_template = _covering(offsets, *word_span)
            in_context = _covering(offsets, *context_span)
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


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PSEvalResult:
    """PS-Eval of one code (an SAE, a random SAE, raw units) on one probe set and reading."""

    name: str
    read: str
    labels: np.ndarray  # [n_pairs]
    pos: np.ndarray  # [n_pairs] part of speech ("?" when unknown)
    top1: np.ndarray  # [n_pairs, 2] top latent of each context; -1 = no latent active
    top1_act: np.ndarray  # [n_pairs, 2]
    same: np.ndarray  # [n_pairs] the top-1 decision
    jaccard: np.ndarray  # [n_pairs] Jaccard@k of the top-k latents
    cosine: np.ndarray  # [n_pairs] cosine of the two codes
    k: int
    confusion: dict[str, int]
    metrics: dict[str, float]
    n_no_active: int  # contexts whose code had no active latent (counted "different" from anything)
    skipped: dict[str, int]
    n_input: int
    hook: str | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    core: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> dict[str, Any]:
        """Confusion matrix and metrics of the pairs in `mask` (e.g. one part of speech)."""
        cm = confusion(self.labels[mask], self.same[mask])
        return {"n": int(mask.sum()), **cm, **metrics_from_confusion(cm)}

    def by_pos(self) -> dict[str, dict[str, Any]]:
        """Metrics per part of speech."""
        return {p: self.subset(self.pos == p) for p in sorted(set(self.pos.tolist()))}

    def roc(self, score: str = "cosine") -> RocCurve:
        """The threshold sweep over a pair score: "cosine" (of the codes) or "jaccard" (Jaccard@k)."""
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        return roc(self.labels, getattr(self, score))

    def _auroc(self, score: str) -> float:
        return self.roc(score).auroc if len(set(self.labels.tolist())) == 2 else float("nan")

    def jaccard_decision(self, threshold: float = 0.5) -> dict[str, Any]:
        """Metrics of the top-k variant: "same" when Jaccard@k >= threshold."""
        cm = confusion(self.labels, self.jaccard >= threshold)
        return {**cm, **metrics_from_confusion(cm)}

    def row(self) -> dict[str, Any]:
        """One flat line for a results table."""
        out = {"name": self.name, "hook": self.hook, "read": self.read, "n_pairs": len(self),
               "n_skipped": sum(self.skipped.values()), **self.metrics, **self.confusion,
               "auroc_cosine": self._auroc("cosine"), f"auroc_jaccard@{self.k}": self._auroc("jaccard"),
               "n_no_active": self.n_no_active}
        out.update({key: value for key, value in self.core.items()})
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.3f}" for k, v in self.metrics.items())
        return f"PSEvalResult({self.name!r}, read={self.read!r}, {len(self)} pairs: {shown})"


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: the number of top latents compared must be a positive integer (e.g. 5).")
    return int(k)


def evaluate_codes(codes: torch.Tensor, labels: Sequence[int] | np.ndarray, *, name: str = "codes",
                   read: str = "template", pos: Sequence[str] | None = None, k: int = 5,
                   require_active: bool = True, skipped: dict[str, int] | None = None, n_input: int | None = None,
                   hook: str | None = None) -> PSEvalResult:
    """Score codes ``[n_pairs, 2, d]`` (one per context) by PS-Eval's top-1 rule and its variants."""
    if codes.ndim != 3 or codes.shape[1] != 2:
        raise ValueError(f"codes must be [n_pairs, 2 contexts, d], got {tuple(codes.shape)}")
    _check_k(k)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(codes):
        raise ValueError(f"{len(codes)} code pairs but {len(labels)} labels")
    ids, values = top_latents(codes, 1, require_active)
    top1, top1_act = ids[..., 0].numpy(), values[..., 0].numpy()
    same = (top1[:, 0] == top1[:, 1]) & (top1[:, 0] >= 0)
    cm = confusion(labels, same)
    return PSEvalResult(
        name=name, read=read, labels=labels,
        pos=np.asarray(pos if pos is not None else ["?"] * len(labels)), top1=top1, top1_act=top1_act,
        same=same, jaccard=jaccard_at_k(codes[:, 0], codes[:, 1], k, require_active),
        cosine=code_cosine(codes[:, 0], codes[:, 1]), k=k, confusion=cm, metrics=metrics_from_confusion(cm),
        n_no_active=int((top1 < 0).sum()), skipped=dict(skipped or {}),
        n_input=n_input if n_input is not None else len(labels), hook=hook,
    )


@torch.no_grad()
def encode(sae, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """SAE codes of activations x [..., d_in], in batches."""
    flat = x.reshape(-1, x.shape[-1])
    parts = [sae.encode(chunk.to(sae.device, sae.dtype)).float().cpu() for chunk in flat.split(batch_size)]
    return torch.cat(parts).reshape(*x.shape[:-1], -1)


def winner_cosines(sae, top1: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Diagnostics: cosine of the two winning latents' encoder columns and decoder rows, by label.

    Per label: the share of pairs whose winners coincide, and the mean cosines over the pairs whose winners differ
    (identical winners have cosine 1 by definition and are left out of the means).
    """
    W_enc = sae.W_enc.detach().double().cpu()
    W_dec = sae.W_dec.detach().double().cpu()
    enc = torch.nn.functional.normalize(W_enc, dim=0)
    dec = torch.nn.functional.normalize(W_dec, dim=1)
    out = {}
    for label, name in ((1, "same_sense"), (0, "different_sense")):
        rows = top1[(labels == label) & (top1 >= 0).all(axis=1)]
        differ = rows[rows[:, 0] != rows[:, 1]]
        a, b = torch.as_tensor(differ[:, 0]), torch.as_tensor(differ[:, 1])
        out[name] = {
            "n": int((labels == label).sum()),
            "share_same_winner": float((rows[:, 0] == rows[:, 1]).mean()) if len(rows) else float("nan"),
            "encoder_cosine": float((enc[:, a] * enc[:, b]).sum(0).mean()) if len(differ) else float("nan"),
            "decoder_cosine": float((dec[a] * dec[b]).sum(1).mean()) if len(differ) else float("nan"),
        }
    return out


def evaluate_sae(sae, probe_acts: ProbeActivations, read: str = "template", *, name: str | None = None,
                 hook: str | None = None, k: int = 5, core: bool = True) -> PSEvalResult:
    """PS-Eval of an SAE: encode both contexts at its hook, apply the top-1 rule, add diagnostics and MSE / L0.

    `core` adds the SAE's reconstruction metrics on the probe rows (both reads of every prompt): mse, l0 and
    explained_variance, the SAE's position on the sparsity-fidelity frontier for these very tokens.
    """
    hook = hook or sae.cfg.hook_name
    if hook is None:
        raise ValueError("The SAE records no hook_name: pass hook=.")
    probe = probe_acts.probe
    codes = encode(sae, probe_acts.pair_acts(hook, read))
    result = evaluate_codes(codes, probe.labels, name=name or f"{sae.cfg.architecture} {sae.cfg.d_sae}", read=read,
                            pos=probe.pos, k=k, skipped=probe.skip_counts(), n_input=probe.n_input, hook=hook)
    result.diagnostics = winner_cosines(sae, result.top1, result.labels)
    if core:
        stats = core_metrics(sae, probe_acts.rows(hook), progress=False)
        result.core = {key: float(stats[key]) for key in ("mse", "l0", "explained_variance")}
    return result


def evaluate_raw(probe_acts: ProbeActivations, hook: str, read: str = "template", *, k: int = 5,
                 name: str = "raw units") -> PSEvalResult:
    """The raw-units baseline: the argmax over the hook's own dimensions, scored by the same rule."""
    probe = probe_acts.probe
    return evaluate_codes(probe_acts.pair_acts(hook, read).float(), probe.labels, name=name, read=read,
                          pos=probe.pos, k=k, require_active=False, skipped=probe.skip_counts(),
                          n_input=probe.n_input, hook=hook)


def random_sae_like(sae, seed: int = 0, keep_b_dec: bool = True):
    """A randomly initialised SAE of the same shape and architecture (untrained: the baseline the anchor lacked).

    Encoder and decoder are saelab's random initialisation. With `keep_b_dec` (default) the decoder bias is the
    trained SAE's: saelab's trainer starts b_dec at the data's geometric median, so a random SAE at step 0 is
    centred on the data too. Without it (b_dec = 0), a residual stream with a few huge dimensions sends nearly
    every token to the same random direction, a much weaker baseline.
    """
    cfg = dataclasses.replace(sae.cfg, metadata={"random_baseline_seed": seed, "kept_b_dec": keep_b_dec},
                              dataset={}, normalize_activations="none")
    random = SAE(cfg, seed=seed).eval()
    if keep_b_dec:
        with torch.no_grad():
            random.b_dec.copy_(sae.b_dec.detach())
    return random


def ps_eval(model, sae, pairs: Sequence[WiCPair], *, read: str = "template", template: str = TEMPLATE,
            multi_token: str = "skip", k: int = 5, cache: bool = False, progress: bool = True) -> PSEvalResult:
    """PS-Eval of one SAE on WiC pairs in one call: prepare the prompts, extract at the SAE's hook, score."""
    probe = prepare_pairs(pairs, model.tokenizer, template=template, multi_token=multi_token)
    acts = extract_probe(model, probe, sae.cfg.hook_name, cache=cache, progress=progress)
    return evaluate_sae(sae, acts, read, k=k)


# ----------------------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over pairs
# ----------------------------------------------------------------------------------------------------------------


def _boot_metric(labels: np.ndarray, same: np.ndarray, idx: np.ndarray, metric: str) -> np.ndarray:
    lab, pred = labels[idx], same[idx]
    tp = ((lab == 1) & pred).sum(1)
    fn = ((lab == 1) & ~pred).sum(1)
    fp = ((lab == 0) & pred).sum(1)
    tn = ((lab == 0) & ~pred).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"accuracy": (tp + tn) / (tp + fn + fp + tn), "precision": tp / (tp + fp), "recall": tp / (tp + fn),
                "f1": 2 * tp / (2 * tp + fp + fn), "specificity": tn / (tn + fp)}[metric]


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def bootstrap_ci(result: PSEvalResult, metric: str = "specificity", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric, resampling pairs."""
    _check_metric(metric)
    idx = np.random.default_rng(seed).integers(0, len(result), size=(n_boot, len(result)))
    values = _boot_metric(result.labels, result.same, idx, metric)
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_difference(a: PSEvalResult, b: PSEvalResult, metric: str = "specificity", n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """metric(a) - metric(b) on the same pairs, with a paired bootstrap interval (the same resampled pairs for both).

    The interval excluding 0 is the evidence this module's notebook calls a difference.
    """
    _check_metric(metric)
    if len(a) != len(b) or not np.array_equal(a.labels, b.labels):
        raise ValueError(f"{a.name!r} and {b.name!r} were scored on different pairs; compare results of one probe set.")
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))
    diff = _boot_metric(a.labels, a.same, idx, metric) - _boot_metric(b.labels, b.same, idx, metric)
    low, high = np.nanpercentile(diff, [50 * (1 - level), 50 * (1 + level)])
    return {"difference": a.metrics[metric] - b.metrics[metric], "low": float(low), "high": float(high)}


# ----------------------------------------------------------------------------------------------------------------
# One pair, explained (the notebook's worked example and the explorer widget)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PairExplanation:
    """The top latents of two contexts of one word, side by side."""

    word: str
    prompts: tuple[str, str]
    target_token: str
    read: str
    top: tuple[list[tuple[int, float]], list[tuple[int, float]]]  # per context: (latent, activation), best first
    top1: tuple[int, int]  # -1 = no latent active
    same: bool
    jaccard: float
    label: int | None = None

    @property
    def shared(self) -> list[int]:
        """Latents in both contexts' top lists."""
        second = {latent for latent, _ in self.top[1]}
        return [latent for latent, _ in self.top[0] if latent in second]

    def table(self) -> list[dict[str, Any]]:
        """Rows of rank, latent and activation for both contexts (for pandas or printing)."""
        rows = []
        for rank in range(max(len(self.top[0]), len(self.top[1]))):
            row: dict[str, Any] = {"rank": rank + 1}
            for c in range(2):
                latent, act = self.top[c][rank] if rank < len(self.top[c]) else (None, None)
                row[f"latent_{c + 1}"], row[f"activation_{c + 1}"] = latent, act
            rows.append(row)
        return rows


def explain_pair(model, sae, context_1: str, context_2: str, word: str, *, k: int = 8, read: str = "template",
                 template: str = TEMPLATE, label: int | None = None, hook: str | None = None) -> PairExplanation:
    """The top-k latents of `word` in two contexts, as PS-Eval reads them.

    Raises ValueError with what to fix when the word is empty, absent from a context, or more than one token.
    """
    if read not in READS:
        raise ValueError(f"read must be one of {READS}, got {read!r}")
    _check_k(k)
    wanted = {"context 1": "a sentence that contains the word", "context 2": "a sentence that contains the word",
              "word": "a word that appears in both contexts"}
    for name, value in zip(wanted, (context_1, context_2, word)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is empty: type {wanted[name]}.")
    word = word.strip()
    pair = WiCPair(word=word, pos="", context_1=context_1.strip(), context_2=context_2.strip(),
                   label=-1 if label is None else int(label))
    probe = prepare_pairs([pair], model.tokenizer, template=template, require_labels=False)
    if probe.skipped:
        raise ValueError(_explain_skip(probe.skipped[0].reason, word, pair, model.tokenizer, template))
    hook = hook or sae.cfg.hook_name
    acts = extract_probe(model, probe, hook, cache=False, progress=False)
    codes = encode(sae, acts.pair_acts(hook, read))[0]  # [2, d_sae]
    ids, values = top_latents(codes, k)
    top = tuple([(int(i), float(v)) for i, v in zip(ids[c].tolist(), values[c].tolist()) if i >= 0]
                for c in range(2))
    top1 = (int(ids[0, 0]), int(ids[1, 0]))
    return PairExplanation(word=word, prompts=(probe.prompts[0], probe.prompts[1]),
                           target_token=probe.target_tokens[0], read=read, top=top, top1=top1,
                           same=top1[0] == top1[1] and top1[0] >= 0,
                           jaccard=float(jaccard_at_k(codes[:1], codes[1:], k)[0]), label=label)


def _explain_skip(reason: str, word: str, pair: WiCPair, tokenizer, template: str = TEMPLATE) -> str:
    if reason.startswith("target absent"):
        c = reason[-1]
        context = pair.context_1 if c == "1" else pair.context_2
        return (f"The word {word!r} does not occur as a whole word in context {c} ({context[:80]!r}). "
                "Type a word that appears in both contexts.")
    if reason == "multi-token target":
        # the tokens that cover the template's copy of the word, as prepare_pairs found them
        text, _, start = render_prompt(template, pair.context_1, word)
        encoded = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        covering = _covering([tuple(o) for o in encoded["offset_mapping"]], start, start + len(word))
        pieces = [tokenizer.decode([encoded["input_ids"][i]]) for i in covering]
        return (f"{word!r} is {len(pieces)} tokens for this model ({pieces}); PS-Eval reads one token. "
                "Pick a word that is a single token.")
    return f"Cannot evaluate this pair: {reason}."


__all__ = [
    "METRICS",
    "READS",
    "TEMPLATE",
    "PSEvalResult",
    "PairExplanation",
    "ProbeActivations",
    "ProbePositions",
    "ProbeSet",
    "RocCurve",
    "SkippedPair",
    "bootstrap_ci",
    "code_cosine",
    "confusion",
    "encode",
    "evaluate_codes",
    "evaluate_raw",
    "evaluate_sae",
    "explain_pair",
    "extract_probe",
    "find_word",
    "jaccard_at_k",
    "metrics_from_confusion",
    "paired_difference",
    "prepare_pairs",
    "ps_eval",
    "random_sae_like",
    "render_prompt",
    "roc",
    "top_latents",
    "winner_cosines",
]
