"""notebook 03: A prompted classifier on a frozen language model, explained from one hidden vector per sentence.

ClassifSAE explains a classifier LLM's decision from the residual stream entering its **last block** at the
**last prompt token**. saelab builds such a classifier on any TransformerLens bridge without fine-tuning the model:

    prompt  = a template that lists the label options,
              e.g. "...negative, neutral or positive?\\nTweet: {text}\\nSentiment:"
    h       = blocks.{n-1}.hook_resid_pre at the prompt's last token          (the sentence vector, [d_model])
    feature = ln_final(block_{n-1}([h]))                                      (the last block on h alone)
    logits  = read-out(feature)        a linear head fit on the train split (default), or label-token scoring

The last block runs on `h` alone, as a one-token sequence: this is how the ClassifSAE authors splice a
reconstructed vector back in ("so that no information leaks through the other positions"), and here it is also
how the classifier itself decides. So the decision is a function of `h` only: splicing a reconstruction or an
ablated vector into `predict_from_hidden` is a real causal intervention, and a perfect reconstruction gives back
exactly the same prediction. `SentenceVectors.outputs` (optional) holds the model's own output of the last block
with the full prompt as context, so a notebook can say how much the one-token shortcut changes the decision.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from saelab._version import __version__
from saelab.activations import extract
from saelab.models import model_name
from saelab.probing_zeroshot import label_token_ids

# A template per offline task (any other task gets DEFAULT_TEMPLATE). {options} lists the label words.
DEFAULT_TEMPLATE = "Classify the text as {options}.\nText: {text}\nAnswer:"
TASK_TEMPLATES = {
    "tweet-sentiment": "Is the sentiment of this tweet {options}?\nTweet: {text}\nSentiment:",
    "wordnet-topics": "Is this sentence mainly about {options}?\nSentence: {text}\nTopic:",
}
READOUTS = ("linear", "label_tokens")


# ------------------------------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------------------------------


def label_words(label_names: Sequence[str]) -> list[str]:
    """Readable words for class names: the part after the last dot ("noun.food" -> "food"), underscores as spaces."""
    return [name.rsplit(".", 1)[-1].replace("_", " ") for name in label_names]


def options_phrase(words: Sequence[str]) -> str:
    """'a, b or c' (the way a person lists options)."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def template_for(task_name: str | None) -> str:
    """The prompt template saelab uses for a task (DEFAULT_TEMPLATE when the task has none of its own)."""
    return TASK_TEMPLATES.get(task_name or "", DEFAULT_TEMPLATE)


def build_prompts(texts: Sequence[str], label_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Fill the template for every text; {options} becomes the label words ("negative, neutral or positive")."""
    if "{text}" not in template:
        raise ValueError(f"the prompt template must contain '{{text}}' where the text goes; got {template!r}")
    options = options_phrase(label_words(label_names))
    return [template.replace("{options}", options).replace("{text}", text) for text in texts]


def check_class_counts(labels: np.ndarray | Sequence[int], label_names: Sequence[str], minimum: int,
                       split: str) -> None:
    """Raise, naming the class, when a split has fewer than `minimum` sentences of some class."""
    counts = Counter(np.asarray(labels).tolist())
    short = [(name, counts.get(i, 0)) for i, name in enumerate(label_names) if counts.get(i, 0) < minimum]
    if short:
        listed = ", ".join(f"{name!r}: {n}" for name, n in short)
        raise ValueError(f"too few sentences per class in the {split} split ({listed}; at least {minimum} each are "
                         f"needed): load the task with a larger n, or drop those classes")


# ------------------------------------------------------------------------------------------------------------------
# Sentence vectors
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class SentenceVectors:
    """One hidden vector per sentence: the residual stream entering the last block at the last prompt token.

    `outputs` (optional) is the last block's output at that token with the whole prompt as context (the model's
    own computation), used only to measure what the one-token read-out changes.
    """

    vectors: torch.Tensor  # [n, d_model]
    texts: list[str]
    labels: np.ndarray | None  # gold class ids, when known
    hook_name: str
    outputs: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"SentenceVectors({len(self)} sentences, d={self.vectors.shape[1]}, hook={self.hook_name!r})"


def last_block_hooks(model) -> tuple[str, str]:
    """(input, output) hook names of the model's last block."""
    last = model.cfg.n_layers - 1
    return f"blocks.{last}.hook_resid_pre", f"blocks.{last}.hook_resid_post"


def last_block_parts(model):
    """(last block, final norm, (rotary embedding, layer type) or None, the block's keyword names) of a bridge.

    The bridge's own components are the model's modules (`model.blocks[i]` is the decoder layer, `model.ln_final`
    the final norm), so this works on every layout TransformerLens maps to blocks + ln_final: GPT-2 (learned
    positions, nothing to pass), and Gemma 2 / Gemma 3 / Llama (rotary: the block is given its position
    embeddings, from the model's rotary module; Gemma 3 has one per layer type, sliding or full).
    """
    blocks, norm = getattr(model, "blocks", None), getattr(model, "ln_final", None)
    layout = type(getattr(model, "original_model", model)).__name__
    if blocks is None or norm is None or not len(blocks):
        raise TypeError(f"The prompted classifier needs a TransformerLens bridge with `blocks` and `ln_final`; this "
                        f"model ({layout}) has no such layout. Load it with saelab.load_model.")
    block = blocks[model.cfg.n_layers - 1]
    names = set(inspect.signature(getattr(block, "original_component", block).forward).parameters)
    if "position_embeddings" not in names:
        return block, norm, None, names
    rotary = getattr(model, "rotary_emb", None)
    if rotary is None:
        raise TypeError(f"{layout}'s blocks take rotary position embeddings but the bridge exposes no `rotary_emb`: "
                        "this layout is not supported by the prompted classifier (GPT-2, Gemma 2, Gemma 3 and Llama "
                        "layouts are).")
    config = getattr(getattr(model, "original_model", None), "config", None)
    layer_types = getattr(config, "layer_types", None)
    inner = getattr(rotary, "original_component", rotary)  # the bridge wraps the HF module
    takes_type = "layer_type" in inspect.signature(inner.forward).parameters
    layer_type = layer_types[model.cfg.n_layers - 1] if layer_types and takes_type else None
    return block, norm, (rotary, layer_type), names


def sentence_vectors(model, texts: Sequence[str], label_names: Sequence[str], labels: Sequence[int] | None = None,
                     *, template: str = DEFAULT_TEMPLATE, with_outputs: bool = False, batch_size: int = 16,
                     cache: bool = True, dataset: str | None = None, progress: bool = True) -> SentenceVectors:
    """Prompt every text, run the model up to its last block and keep the last token's residual stream there.

    Uses `saelab.extract(..., pooling="last")`, so results are cached on disk (`cache=True`) and reused.
    with_outputs: also keep the last block's output (one more block of compute) for `context_agreement`.
    """
    hook_in, hook_out = last_block_hooks(model)
    prompts = build_prompts(texts, label_names, template)
    hooks = [hook_in, hook_out] if with_outputs else [hook_in]
    acts = extract(model, prompts, hooks, pooling="last", batch_size=batch_size, cache=cache, dataset=dataset,
                   progress=progress)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts")
    meta = {"model": model_name(model), "hook_name": hook_in, "template": template,
            "label_names": list(label_names), "dataset": dataset, "saelab_version": __version__,
            "extraction": {k: acts.meta.get(k) for k in ("cache_key", "dataset_fingerprint", "n_truncated")}}
    return SentenceVectors(acts[hook_in], list(texts), None if labels is None else np.asarray(labels), hook_in,
                           acts[hook_out] if with_outputs else None, meta)


# ------------------------------------------------------------------------------------------------------------------
# The classifier
# ------------------------------------------------------------------------------------------------------------------


class PromptedClassifier:
    """Frozen model + prompt + read-out; decides from the last block's input vector at the last prompt token.

    Build it with `PromptedClassifier(model, label_names)`, then `fit(train_vectors, train_labels)` for the linear
    read-out (or `readout="label_tokens"`: zero-shot scoring of the label words' unembedding rows, nothing to fit).
    `logits_from_hidden(h)` is differentiable in h (for methods trained through the classifier, like ConceptSHAP).
    saelab never trains the language model: code that backpropagates through it does so inside `frozen_model()`,
    which switches the model's `requires_grad` off for that block alone, so the caller's model is left as it was.
    """

    def __init__(self, model, label_names: Sequence[str], *, template: str = DEFAULT_TEMPLATE,
                 readout: str = "linear"):
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if len(label_names) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {list(label_names)}")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label names must be distinct, got {list(label_names)}")
        self.model = model
        self.label_names = list(label_names)
        self.template = template
        self.readout = readout
        self.hook_name = last_block_hooks(model)[0]
        self.d_model = int(model.cfg.d_model)
        self._block, self._norm, self._rotary, self._block_kwargs = last_block_parts(model)
        self.head = nn.Linear(self.d_model, len(self.label_names))
        self.head.requires_grad_(False)
        self.fitted = False
        if readout == "label_tokens":
            self._set_label_token_head()

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "not fitted"
        return (f"PromptedClassifier({model_name(self.model)}, classes={self.label_names}, readout={self.readout!r}, "
                f"{state}, hook={self.hook_name!r})")

    # ---- checks -----------------------------------------------------------------------------------------------

    def check_labels(self, label_names: Sequence[str]) -> None:
        """Raise when a task's classes are not exactly this classifier's, in the same order."""
        if list(label_names) != self.label_names:
            raise ValueError(f"the label set {list(label_names)} does not match the classifier's head, which was "
                             f"built for {self.label_names}; build a classifier for this task's labels")

    def check_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = torch.as_tensor(hidden)
        if hidden.ndim != 2 or hidden.shape[1] != self.d_model:
            raise ValueError(f"hidden vectors must be [n, d_model={self.d_model}] (the model's width at "
                             f"{self.hook_name}), got shape {tuple(hidden.shape)}")
        return hidden

    # ---- the computation ----------------------------------------------------------------------------------------

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """ln_final(last block(h as a one-token sequence)) for h [n, d_model] -> [n, d_model] (differentiable)."""
        hidden = self.check_hidden(hidden)
        param = next(self._block.parameters())
        h = hidden.to(param.device, param.dtype)[:, None, :]
        position_ids = torch.zeros(h.shape[:2], dtype=torch.long, device=h.device)
        kwargs = {"attention_mask": None}
        if "position_ids" in self._block_kwargs:
            kwargs["position_ids"] = position_ids
        if self._rotary is not None:
            rotary, layer_type = self._rotary
            args = (h, position_ids) if layer_type is None else (h, position_ids, layer_type)
            kwargs["position_embeddings"] = rotary(*args)
        out = self._block(h, **kwargs)
        if isinstance(out, tuple):  # older transformers return (hidden_states, ...)
            out = out[0]
        # the read-out is fp32 on the caller's device, whatever the model's dtype and device
        return self._norm(out)[:, 0, :].float().to(hidden.device)

    @contextlib.contextmanager
    def frozen_model(self):
        """Inside the block no gradient is computed for the language model's weights (restored afterwards)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in trainable:
                p.requires_grad_(True)

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Class logits [n, n_classes] from hidden vectors [n, d_model] (differentiable in `hidden`)."""
        self._check_ready()
        features = self.features(hidden)
        return self.head.to(features.device)(features)

    @torch.no_grad()
    def proba_from_hidden(self, hidden: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities [n, n_classes], in batches, no gradient."""
        hidden = self.check_hidden(hidden)
        parts = [self.logits_from_hidden(chunk).softmax(-1) for chunk in hidden.split(batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.n_classes)

    def predict_from_hidden(self, hidden: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Predicted class ids [n] for hidden vectors spliced in at the last block's input."""
        return self.proba_from_hidden(hidden, batch_size).argmax(-1)

    # ---- the read-out -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def feature_matrix(self, hidden: torch.Tensor, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        hidden = self.check_hidden(hidden)
        chunks = hidden.split(batch_size)
        return torch.cat([self.features(c) for c in tqdm(chunks, desc="last block", disable=not progress)])

    def fit(self, vectors: SentenceVectors | torch.Tensor, labels: Sequence[int] | None = None, *,
            C: float | None = None, min_per_class: int = 5, max_iter: int = 2000, progress: bool = False
            ) -> PromptedClassifier:
        """Fit the linear read-out (scikit-learn logistic regression on standardised features) on a train split.

        C: the inverse L2 strength; None chooses it by 3-fold cross-validation on the train split among
        0.001, 0.01, 0.1 and 1 (with a few hundred sentences and 640 features, C=1 overfits).
        """
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.preprocessing import StandardScaler

        if self.readout != "linear":
            raise ValueError("only the 'linear' read-out is fitted; 'label_tokens' scores the label words as they are")
        hidden, labels = _unpack(vectors, labels)
        if len(labels) != len(hidden):
            raise ValueError(f"{len(labels)} labels for {len(hidden)} vectors")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be class ids in 0..{self.n_classes - 1} for classes {self.label_names}; "
                             f"got values {sorted(set(labels.tolist()))}")
        check_class_counts(labels, self.label_names, min_per_class, "train")
        feats = self.feature_matrix(hidden, progress=progress).double().numpy()
        scaler = StandardScaler().fit(feats)
        if C is None:
            lr = LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=3, max_iter=max_iter)
        else:
            lr = LogisticRegression(C=C, max_iter=max_iter)
        with warnings.catch_warnings():  # scikit-learn 1.9 announces future defaults; the values used are explicit
            warnings.simplefilter("ignore", FutureWarning)
            lr.fit(scaler.transform(feats), labels)
        self.C = float(np.atleast_1d(lr.C_)[0]) if C is None else float(C)
        coef, intercept = lr.coef_ / scaler.scale_, lr.intercept_.copy()
        intercept = intercept - coef @ scaler.mean_
        if self.n_classes == 2:  # scikit-learn gives one row for two classes: logits [0, w.x + b]
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
        self.fitted = True
        return self

    def _set_label_token_head(self) -> None:
        """Zero-shot read-out: each class's logit is the model's logit for the first token of ' {label word}'."""
        try:
            ids = label_token_ids(self.model.tokenizer, label_words(self.label_names))
        except ValueError as err:
            raise ValueError(f"{err} Or use the 'linear' read-out.") from None
        unembed = self.model.original_model.get_output_embeddings()
        with torch.no_grad():
            self.head.weight.copy_(unembed.weight[ids].float())
            bias = getattr(unembed, "bias", None)
            self.head.bias.copy_(bias[ids].float() if bias is not None else torch.zeros(len(ids)))
        self.label_token_ids = ids
        self.fitted = True

    def _check_ready(self) -> None:
        if not self.fitted:
            raise RuntimeError("the linear read-out is not fitted yet: call classifier.fit(train_vectors, labels)")

    # ---- evaluation ---------------------------------------------------------------------------------------------

    def accuracy(self, vectors: SentenceVectors | torch.Tensor, labels: Sequence[int] | None = None) -> float:
        hidden, labels = _unpack(vectors, labels)
        return float((self.predict_from_hidden(hidden).numpy() == labels).mean())

    @torch.no_grad()
    def context_agreement(self, vectors: SentenceVectors) -> dict[str, float]:
        """How the one-token decision compares with the same read-out on the model's full-context last block.

        Returns the share of sentences on which both decide alike, and each one's accuracy (when labels are known).
        """
        if vectors.outputs is None:
            raise ValueError("these SentenceVectors have no outputs: extract them with with_outputs=True")
        self._check_ready()
        one_token = self.predict_from_hidden(vectors.vectors).numpy()
        param = next(self._block.parameters())
        full = torch.cat([self.head(self._norm(o[:, None, :].to(param.device, param.dtype))[:, 0].float().cpu())
                          for o in vectors.outputs.split(256)]).argmax(-1).numpy()
        out = {"agreement": float((one_token == full).mean())}
        if vectors.labels is not None:
            out.update(accuracy_one_token=float((one_token == vectors.labels).mean()),
                       accuracy_full_context=float((full == vectors.labels).mean()))
        return out


def _unpack(vectors: SentenceVectors | torch.Tensor, labels: Sequence[int] | None) -> tuple[torch.Tensor, np.ndarray]:
    if isinstance(vectors, SentenceVectors):
        labels = vectors.labels if labels is None else labels
        vectors = vectors.vectors
    if labels is None:
        raise ValueError("labels are needed (the SentenceVectors carry none): pass labels=")
    return torch.as_tensor(vectors), np.asarray(labels, dtype=np.int64)


def build_classifier(model, task, *, n_train: int | None = None, template: str | None = None,
                     readout: str = "linear", with_outputs: bool = True, batch_size: int = 16, cache: bool = True,
                     min_per_class: int = 5, progress: bool = True
                     ) -> tuple[PromptedClassifier, SentenceVectors, SentenceVectors]:
    """Build and fit the prompted classifier for a `ClassificationTask`; return (classifier, train, test) vectors.

    The prompt lists the task's label words; the read-out is fit on the train split. Each split must hold at
    least `min_per_class` sentences of every class.
    """
    template = template or template_for(task.name)
    check_class_counts(task.train.labels, task.label_names, min_per_class, "train")
    check_class_counts(task.test.labels, task.label_names, 1, "test")
    classifier = PromptedClassifier(model, task.label_names, template=template, readout=readout)
    train_texts, train_labels = task.train.texts[:n_train], task.train.labels[:n_train]
    vectors = {}
    for split, texts, labels in (("train", train_texts, train_labels), ("test", task.test.texts, task.test.labels)):
        vectors[split] = sentence_vectors(model, texts, task.label_names, labels, template=template,
                                          with_outputs=with_outputs, batch_size=batch_size, cache=cache,
                                          dataset=f"{task.name}/{split}", progress=progress)
    if readout == "linear":
        classifier.fit(vectors["train"], min_per_class=min_per_class)
    return classifier, vectors["train"], vectors["test"]


__all__ = [
    "DEFAULT_TEMPLATE", "TASK_TEMPLATES", "PromptedClassifier", "SentenceVectors", "build_classifier",
    "build_prompts", "check_class_counts", "label_words", "last_block_hooks", "last_block_parts", "options_phrase",
    "sentence_vectors",
    "template_for",
]
