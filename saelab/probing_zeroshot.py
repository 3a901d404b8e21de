"""notebook 04: zero-shot labels by label-word scoring, for the behaviour-prediction experiment (MOSAIC's transfer).

`zero_shot(model, texts, label_words)` scores each label word's first token as the prompt's next token (optionally
with contextual calibration) and returns the prompts' token activations at the requested hooks, so one forward pass
gives both the labels and the features. `label_logits` runs the model's own final norm and unembedding on cached
final residuals. Re-exported by `saelab.probing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saelab.activations import Activations, extract
from saelab.checks import check_texts
from saelab.latents import final_norm_and_unembed


@dataclass
class ZeroShot:
    """A model's zero-shot labels: the label word it scores highest as the prompt's next token.

    `predictions` are calibrated when `calibration` is set (see `zero_shot`), `raw_predictions` never are.
    """

    label_words: list[str]
    label_token_ids: list[int]
    template: str
    logits: torch.Tensor  # [n_texts, n_labels] next-token logits of the label words
    raw_predictions: np.ndarray
    predictions: np.ndarray
    tokens: Activations  # token-level activations of the prompts at the requested feature hooks
    calibration: torch.Tensor | None = None  # [n_labels] log of the content-free label probabilities

    def correct(self, labels, raw: bool = False) -> np.ndarray:
        labels = np.asarray(labels)
        if len(labels) != len(self.predictions):
            raise ValueError(f"{len(labels)} labels for {len(self.predictions)} zero-shot predictions.")
        return (self.raw_predictions if raw else self.predictions) == labels

    def accuracy(self, labels, raw: bool = False) -> float:
        return float(self.correct(labels, raw).mean())


def label_token_ids(tokenizer, label_words: Sequence[str], prefix: str = " ") -> list[int]:
    """The first token of each label word as it would follow the prompt (`prefix` + word); they must differ.
    The one rule for "a label word's token" (zero-shot scoring here, the classifier's label-token read-out, notebook
    07): a tokenizer that splits the space off as a token of its own puts it first, and that token is skipped."""
    encoded = [tokenizer.encode(prefix + w, add_special_tokens=False) for w in label_words]
    empty = [w for w, e in zip(label_words, encoded) if not e]
    if empty:
        raise ValueError(f"The label word {empty[0]!r} (with prefix {prefix!r}) is no token at all: give non-empty "
                         "label words.")
    ids = [next((t for t in e if tokenizer.decode([t]).strip()), e[0]) for e in encoded]
    if len(set(ids)) != len(ids):
        raise ValueError(f"The label words {list(label_words)} share a first token ({ids}); choose words whose "
                         "first tokens differ, or score whole words.")
    return ids


def zero_shot(model, texts: Sequence[str], label_words: Sequence[str], *,
              template: str = "Tweet: {text}\nSentiment (negative, neutral or positive):",
              prefix: str = " ", feature_hooks: Sequence[str] = (), calibrate: bool = False,
              content_free: Sequence[str] = ("N/A", "", "[MASK]"), batch_size: int = 32, cache: bool = True,
              progress: bool = True) -> ZeroShot:
    """Zero-shot classification by label-word scoring: the label whose word's first token gets the highest
    next-token logit after the prompt.

    One forward pass per prompt, cached: `saelab.extract` reads the final residual stream (it stops before the
    unembedding) together with `feature_hooks`; the final norm and unembedding then run on the last position
    only, for the label words' columns (`prefix` + word: a space, as words follow a colon). The prompt's token
    activations at `feature_hooks` come back as `ZeroShot.tokens`, so the same pass gives the features for
    predicting the model's behaviour.

    calibrate: contextual calibration (Zhao et al. 2021): small models favour one label word whatever the text;
        the label probabilities (renormalised over the label words) of `content_free` texts, averaged, estimate
        that prior, and each prediction divides it out. `raw_predictions` keep the uncalibrated labels.
    """
    texts = check_texts(texts)
    if "{text}" not in template:
        raise ValueError("template must contain '{text}' where the text goes.")
    if len(label_words) < 2:
        raise ValueError("zero_shot needs at least two label words.")
    ids = label_token_ids(model.tokenizer, label_words, prefix)
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    hooks = list(dict.fromkeys([*feature_hooks, final]))
    prompts = [template.format(text=t) for t in texts]
    acts = extract(model, prompts, hooks, pooling="none", batch_size=batch_size, cache=cache,
                   dataset="zero-shot prompts", progress=progress)
    last_rows = acts.offsets[1:] - 1
    logits = label_logits(model, acts[final][last_rows], ids)
    kept = {h: acts[h] for h in hooks if h != final or final in feature_hooks}
    tokens = Activations(list(kept), "none", kept, acts.lengths, acts.token_ids, acts.meta, acts.folder)
    raw = logits.argmax(1).numpy()
    if not calibrate:
        return ZeroShot(list(label_words), ids, template, logits, raw, raw.copy(), tokens)
    free = extract(model, [template.format(text=t) for t in content_free], final, pooling="last", progress=False)
    offset = label_logits(model, free.tensor, ids).softmax(1).mean(0).log()
    calibrated = (logits.log_softmax(1) - offset).argmax(1).numpy()
    return ZeroShot(list(label_words), ids, template, logits, raw, calibrated, tokens, offset)


@torch.no_grad()
def label_logits(model, final_resid: torch.Tensor, token_ids: Sequence[int], chunk: int = 64) -> torch.Tensor:
    """Next-token logits of `token_ids` from final-block residuals [n, d_model], through the model's own final
    norm and unembedding (what the model's forward computes at those positions)."""
    norm, unembed = final_norm_and_unembed(model)
    param = next(model.parameters())
    ids = torch.as_tensor(list(token_ids), device=param.device)
    out = []
    for start in range(0, len(final_resid), chunk):
        h = final_resid[start:start + chunk].to(param.device, param.dtype)
        out.append(unembed(norm(h))[:, ids].float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(ids))


__all__ = ["ZeroShot", "label_logits", "label_token_ids", "zero_shot"]
