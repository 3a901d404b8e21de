"""notebook 04: padded-batch token rows, BOS and padding kept: what MOSAIC's paper pools.

`padded_tokens(model, texts, hook)` runs texts in padded batches, as a Hugging Face pipeline does, and keeps every
position with its kind (REAL, BOS or PAD). `saelab.probing.sae_features(..., faithful=True)` pools every row, as the
paper does; `faithful=False` keeps the real tokens only.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saelab._version import __version__
from saelab.activations import Activations, stop_at_layer
from saelab.checks import check_hooks, check_texts
from saelab.config import cache_dir
from saelab.io import atomic_dir, read_json, save_tensors, sha256_text, write_json
from saelab.models import model_fingerprint, model_name

#: kinds of rows in a padded batch (`PaddedTokens.kinds`)
REAL, BOS, PAD = 0, 1, 2


@dataclass
class PaddedTokens:
    """Token-level activations of padded batches, every position kept: `kinds[row]` is REAL, BOS or PAD.

    `activations` is an ordinary token-level `Activations` whose rows for text i are all columns of its batch row
    (width = longest text in its batch). Pool with `saelab.probing.sae_features(..., faithful=True)` to include
    every row, as the paper does, or `faithful=False` to keep REAL rows only.
    """

    activations: Activations
    kinds: torch.Tensor  # [n_rows] int8
    batch_size: int
    padding_side: str

    def real_only(self) -> Activations:
        """The REAL rows only, as `saelab.extract(..., pooling="none")` gives them (up to float rounding)."""
        keep = self.kinds == REAL
        acts = self.activations
        text_of_row = torch.repeat_interleave(torch.arange(len(acts.lengths)), acts.lengths)
        lengths = torch.bincount(text_of_row[keep], minlength=len(acts.lengths))
        return Activations(acts.hooks, "none", {h: x[keep] for h, x in acts.acts.items()}, lengths,
                           acts.token_ids[keep], {**acts.meta, "padded": False}, None)

    def __repr__(self) -> str:
        counts = torch.bincount(self.kinds.long(), minlength=3).tolist()
        return (f"PaddedTokens({len(self.activations.lengths)} texts, rows: {counts[REAL]:,} real / {counts[BOS]:,} "
                f"BOS / {counts[PAD]:,} padding; batch_size={self.batch_size}, padding {self.padding_side})")

def padded_tokens(model, texts: Sequence[str], hook: str | Sequence[str], *, batch_size: int = 8,
                  max_length: int = 512, cache: bool | str | Path | None = True, progress: bool = True) -> PaddedTokens:
    """Run `texts` in padded batches of `batch_size`, in the order given, and keep every position of every row.

    This is how the paper's Hugging Face pipeline sees a text: the tokenizer pads a batch to its longest text
    (on the tokenizer's own side; Gemma pads on the left), the model runs with the attention mask, and
    `hidden_states[L]` holds a vector at every position, padding included. Only the rows' *kinds* are recorded
    here; which rows to pool is decided later (`saelab.probing.sae_features(..., faithful=...)`).

    cache: True (saelab's cache folder), a folder, or None. The key covers the model weights, hooks, texts,
        batch size, padding side and saelab version: padding depends on batch-mates, so all of them matter.
    """
    texts = check_texts(texts)
    hooks = check_hooks(model, hook)
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    tokenizer = model.tokenizer
    meta = {"model": model_name(model), "model_fingerprint": model_fingerprint(model), "hooks": hooks,
            "pooling": "none", "padded": True, "batch_size": int(batch_size), "padding_side": tokenizer.padding_side,
            "max_length": max_length, "n_texts": len(texts), "dataset_fingerprint": sha256_text(*texts),
            "saelab_version": __version__}
    key = sha256_text(*(f"{k}={meta[k]}" for k in sorted(meta)))[:24]
    folder = None
    if cache:
        folder = cache_dir("activations", "padded") / key if cache is True else Path(cache)
        loaded = _load_padded(folder, key)
        if loaded is not None:
            return loaded
    parts = []
    stop = stop_at_layer(model, hooks)
    bar = tqdm(total=len(texts), desc="padded batches", unit="text", disable=not progress)
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        parts.append(_padded_batch(model, batch, hooks, stop, max_length))
        bar.update(len(batch))
    bar.close()
    tensors = {h: torch.cat([p[h] for p in parts]) for h in hooks}
    tensors["lengths"] = torch.cat([p["lengths"] for p in parts])
    tensors["token_ids"] = torch.cat([p["token_ids"] for p in parts])
    tensors["kinds"] = torch.cat([p["kinds"] for p in parts])
    if folder is not None:
        with atomic_dir(folder) as tmp:
            save_tensors(tensors, tmp / "padded.safetensors")
            write_json(tmp / "meta.json", {**meta, "key": key})
    return _padded_from(tensors, meta, folder)

@torch.no_grad()
def _padded_batch(model, batch: list[str], hooks: list[str], stop: int | None, max_length: int) -> dict:
    tokenizer = model.tokenizer
    encoded = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    device = next(model.parameters()).device
    captured: dict[str, torch.Tensor] = {}

    def capture(activation, hook, name):
        captured[name] = activation.detach()

    fwd_hooks = [(name, functools.partial(capture, name=name)) for name in hooks]
    if stop is not None and stop >= model.cfg.n_layers:
        stop = None  # a hook after the last block: run the whole model (the unembedding included)
    with model.hooks(fwd_hooks=fwd_hooks):
        model(ids.to(device), attention_mask=mask.to(device), stop_at_layer=stop)
    kinds = torch.where(mask == 0, PAD, REAL)
    if tokenizer.bos_token_id is not None:
        kinds = torch.where((ids == tokenizer.bos_token_id) & (mask == 1), BOS, kinds)
    n, width = ids.shape
    out = {h: captured[h].float().cpu().reshape(n * width, -1) for h in hooks}
    out["lengths"] = torch.full((n,), width, dtype=torch.long)
    out["token_ids"] = ids.reshape(-1)
    out["kinds"] = kinds.reshape(-1).to(torch.int8)
    return out

def _padded_from(tensors: dict, meta: dict, folder: Path | None) -> PaddedTokens:
    hooks = meta["hooks"]
    acts = Activations(hooks, "none", {h: tensors[h] for h in hooks}, tensors["lengths"], tensors["token_ids"],
                       dict(meta), folder)
    return PaddedTokens(acts, tensors["kinds"], meta["batch_size"], meta["padding_side"])

def _load_padded(folder: Path, key: str) -> PaddedTokens | None:
    try:
        meta = read_json(folder / "meta.json")
        if meta.get("key") != key:
            return None
        from safetensors.torch import load_file

        return _padded_from(load_file(str(folder / "padded.safetensors")), meta, folder)
    except (OSError, ValueError, KeyError):
        return None


__all__ = ["BOS", "PAD", "REAL", "PaddedTokens", "padded_tokens"]
