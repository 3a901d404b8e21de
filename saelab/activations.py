"""Activation extraction: run texts through a model, read hook points, pool over real tokens, cache on disk.

The model stops after the last block a requested hook needs (`stop_at_layer`), texts are batched by similar length
so little compute goes to padding, and large extractions stream to disk in shards that a later call verifies and
resumes. Pooling only ever sees real tokens: the attention mask removes padding (Gemma pads on the left) and the BOS
token is skipped unless asked for.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from saelab._version import __version__
from saelab.activation_cache import concat_parts, extract_cached, read_cache
from saelab.checks import BLOCK_HOOK, check_hooks, check_texts
from saelab.config import cache_dir
from saelab.io import sha256_text
from saelab.models import model_fingerprint, model_name

POOLINGS = ("none", "mean", "max", "sum", "last")


# ----------------------------------------------------------------------------------------------------------------
# Position selectors
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextTokens:
    """One text as the model sees it, real tokens only (position 0 is BOS when the tokenizer adds one)."""

    index: int
    text: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]  # character span of each token in `text`; (0, 0) for special tokens


class LastOccurrence:
    """Select the last token of the last whole-word occurrence of a word in each text (case-insensitive), among the
    occurrences the model sees whole (a text cut to `max_length` tokens may lose its last ones).

    `words` is one word for every text, or one word per text (for example each WiC pair's target word).
    PS-Eval reads the SAE code here: the last position of the target word's copy in ``"... The {word} means"``.
    """

    def __init__(self, words: str | Sequence[str]):
        listed = _check_words(words)
        self.words = words if isinstance(words, str) else listed

    @property
    def spec(self) -> str:
        words = [self.words] if isinstance(self.words, str) else list(self.words)
        return "last_occurrence:" + sha256_text(*words)[:16]

    def _word(self, index: int) -> str:
        if isinstance(self.words, str):
            return self.words
        if index >= len(self.words):
            raise ValueError(f"last_occurrence got {len(self.words)} word(s) for text {index}: give one word for "
                             "every text, or a single word for all of them.")
        return self.words[index]

    def __call__(self, tokens: TextTokens) -> list[int]:
        word = self._word(tokens.index)
        matches = list(re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", tokens.text, flags=re.IGNORECASE))
        seen = max((b for _, b in tokens.offsets), default=0)  # texts cut to max_length end early
        for match in reversed(matches):
            start, end = match.span()
            if end > seen:  # cut off, wholly or in part: the model never sees this occurrence's last token
                continue
            covering = [i for i, (a, b) in enumerate(tokens.offsets) if b > a and a < end and b > start]
            if covering:
                return covering[-1:]
        return []


def _check_words(words) -> list[str]:
    """The words of a selector as a list; a clear error for None, a non-string or an empty word."""
    hint = "give the word to find (a string), or one word per text"
    try:
        listed = [words] if isinstance(words, str) else list(words)
    except TypeError:
        raise TypeError(f"last_occurrence: {hint}, not {words!r}.") from None
    for i, word in enumerate(listed):
        if not isinstance(word, str):
            raise TypeError(f"last_occurrence: word {i} is {word!r}; {hint}.")
        if not word.strip():
            raise ValueError(f"last_occurrence: word {i} is empty ({word!r}); {hint}.")
    return listed


def last_occurrence(words: str | Sequence[str]) -> LastOccurrence:
    """Position selector: the last token of the last occurrence of `words` (one word, or one per text)."""
    return LastOccurrence(words)


# ----------------------------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Activations:
    """Activations for a list of texts at one or more hooks.

    Pooled extractions hold one row per text (`acts[hook]` is ``[n_texts, d]``). With ``pooling="none"`` rows are
    tokens: ``[n_tokens, d]`` in text order, `lengths[i]` tokens for text i, with their `token_ids`.
    """

    hooks: list[str]
    pooling: str
    acts: dict[str, torch.Tensor]
    lengths: torch.Tensor  # tokens kept per text (pooled: number of positions pooled)
    token_ids: torch.Tensor | None = None  # [n_tokens] when pooling == "none"
    meta: dict = field(default_factory=dict)
    folder: Path | None = None  # the cache folder this came from, when cached

    def __getitem__(self, hook: str) -> torch.Tensor:
        if hook not in self.acts:
            raise KeyError(f"No activations for hook '{hook}'; this extraction has: {self.hooks}")
        return self.acts[hook]

    @property
    def tensor(self) -> torch.Tensor:
        """The activations of the only hook (an error when several hooks were extracted)."""
        if len(self.hooks) != 1:
            raise ValueError(f"Several hooks were extracted ({self.hooks}); index by hook name instead.")
        return self.acts[self.hooks[0]]

    @property
    def offsets(self) -> torch.Tensor:
        """Row where each text starts (token-level extractions), plus the total at the end."""
        return torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    def text_rows(self, i: int, hook: str | None = None) -> torch.Tensor:
        """The token rows of text `i` (pooling="none")."""
        start, end = self.offsets[i].item(), self.offsets[i + 1].item()
        return (self.acts[hook] if hook else self.tensor)[start:end]

    def pool(self, pooling: str) -> Activations:
        """Pool a token-level extraction into one row per text, as `extract(..., pooling=pooling)` would.

        Handy for comparing poolings: extract once with ``pooling="none"``, then pool as often as you like.
        """
        if self.pooling != "none":
            raise ValueError(f"Only token-level activations can be pooled; these are already {self.pooling!r}-pooled.")
        if pooling not in POOLINGS[1:]:
            raise ValueError(f"Unknown pooling '{pooling}'. Choose one of {POOLINGS[1:]}.")
        text_of_row = torch.repeat_interleave(torch.arange(len(self.lengths)), self.lengths)
        pooled = {hook: pool_segments(x, text_of_row, self.lengths, pooling) for hook, x in self.acts.items()}
        meta = {**self.meta, "pooling": pooling}
        return Activations(self.hooks, pooling, pooled, self.lengths.clone(), None, meta, self.folder)

    def __repr__(self) -> str:
        shapes = {h: tuple(t.shape) for h, t in self.acts.items()}
        return f"Activations(pooling={self.pooling!r}, shapes={shapes}, model={self.meta.get('model')!r})"


# ----------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------

def extract(
    model,
    texts: Sequence[str],
    hook: str | Sequence[str],
    pooling: str = "mean",
    *,
    batch_size: int = 32,
    include_bos: bool = False,
    positions: Callable[[TextTokens], Sequence[int]] | None = None,
    max_length: int = 512,
    cache: bool | str | Path | None = None,
    shard_size: int = 2048,
    allow_missing: bool = False,
    dataset: str | None = None,
    storage_dtype: str = "float32",
    progress: bool = True,
) -> Activations:
    """Extract activations of `texts` at `hook` (a name or a list of names), pooled over real tokens.

    Args:
        model: a TransformerLens `TransformerBridge` (from `saelab.load_model`).
        texts: the texts; each becomes one row (pooled) or one row per token (``pooling="none"``).
        hook: hook name(s), e.g. ``"blocks.6.hook_resid_post"``; several hooks share one forward pass, which
            stops after the deepest block needed.
        pooling: ``"none"`` (per token), ``"mean"``, ``"max"``, ``"sum"`` or ``"last"``.
        batch_size: texts per forward pass; texts are grouped by length, so padding costs little.
        include_bos: pool the BOS position too (it carries a large, content-free activation, so it is off).
        positions: optional selector giving, for each text, the token positions to keep (see `last_occurrence`);
            pooling then runs over those positions only.
        max_length: texts longer than this many tokens are truncated (counted in `meta["n_truncated"]`).
        cache: None/False (no cache), True (saelab's cache folder, keyed by model, hooks, options and texts) or a
            folder. A cache is verified before use; a corrupt or mismatched one is rebuilt. Shards are written as
            they complete, so an interrupted call resumes where it stopped.
        shard_size: texts per shard on disk.
        allow_missing: when a selector finds no position in a text (or `max_length` leaves no token to pool),
            fill NaN and record it in `meta["missing"]` instead of raising.
        dataset: a name recorded in the metadata (for example the task name).
        storage_dtype: "float32", or "float16" / "bfloat16" to halve memory and disk (the values come back in
            that dtype; float16 raises if an activation exceeds its range). Part of the cache key.
    """
    extractor, texts, shards, meta = plan_extraction(
        model, texts, hook, pooling=pooling, batch_size=batch_size, include_bos=include_bos, positions=positions,
        max_length=max_length, cache=cache, shard_size=shard_size, allow_missing=allow_missing, dataset=dataset,
        storage_dtype=storage_dtype)
    bar = tqdm(total=len(texts), desc=f"extract {pooling}", unit="text", disable=not progress)
    try:
        if not cache:
            parts = []
            for shard in shards:
                parts.append(extractor.run([texts[i] for i in shard], shard.start))
                bar.update(len(shard))
            result = concat_parts(parts, extractor.hooks)
            meta.update(result.pop("_stats"))
            return as_activations(result, extractor.hooks, pooling, meta, None)
        folder = _cache_folder(cache, meta)
        extract_cached(extractor.run, extractor.hooks, texts, shards, folder, meta, bar)
        return load_activations(folder, verify=False)
    finally:
        bar.close()


def extract_to_cache(model, texts: Sequence[str], hook: str | Sequence[str], *, cache: bool | str | Path = True,
                     batch_size: int = 32, max_length: int = 512, shard_size: int = 2048, dataset: str | None = None,
                     storage_dtype: str = "float32", progress: bool = True) -> Path:
    """Write the per-token activations of `texts` at `hook`(s) to an activation cache and return its folder,
    without loading them: for corpora larger than memory, read back shard by shard (`ShardedTokens`).

    The folder is the one `extract(..., pooling="none", cache=cache)` with the same arguments uses, so either
    call resumes or reuses the other's work.
    """
    if not cache:
        raise ValueError("extract_to_cache needs cache=True (saelab's cache folder) or a folder; "
                         "for activations in memory call saelab.extract")
    extractor, texts, shards, meta = plan_extraction(model, texts, hook, batch_size=batch_size, max_length=max_length,
                                                     cache=cache, shard_size=shard_size, dataset=dataset,
                                                     storage_dtype=storage_dtype)
    folder = _cache_folder(cache, meta)
    with tqdm(total=len(texts), desc="extract tokens", unit="text", disable=not progress) as bar:
        extract_cached(extractor.run, extractor.hooks, texts, shards, folder, meta, bar)
    return folder


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def plan_extraction(model, texts, hook, *, pooling: str = "none", batch_size: int = 32, include_bos: bool = False,
                    positions=None, max_length: int = 512, cache: bool | str | Path | None = True,
                    shard_size: int = 2048, allow_missing: bool = False, dataset: str | None = None,
                    storage_dtype: str = "float32"):
    """Check the arguments of an extraction (as `extract` takes them); return (extractor, texts, shards, meta):
    the callable that extracts one shard, the checked texts, the shards' text ranges, and the manifest metadata
    with its cache key. `extract`, `extract_to_cache` and `saelab.activation_store` all plan through it."""
    texts = check_texts(texts)
    hooks = check_hooks(model, hook)
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling '{pooling}'. Choose one of {POOLINGS}.")
    sizes = {"batch_size": batch_size, "shard_size": shard_size, "max_length": max_length}
    bad = {k: v for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1}
    if bad:
        shown = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        raise ValueError(f"Got {shown}: batch_size, shard_size and max_length must all be positive integers.")
    if positions is not None and cache and not hasattr(positions, "spec"):
        raise ValueError(
            "A cached extraction needs a position selector with a `spec` string that identifies it "
            "(like saelab.last_occurrence); give it one, or pass cache=None."
        )

    meta = {
        "model": model_name(model),
        "model_fingerprint": model_fingerprint(model),
        "model_source": getattr(model, "saelab_source", "unknown"),
        "hooks": hooks,
        "pooling": pooling,
        "include_bos": include_bos,
        "positions": getattr(positions, "spec", None if positions is None else "callable"),
        "max_length": max_length,
        "n_texts": len(texts),
        "dataset": dataset,
        "dataset_fingerprint": sha256_text(*texts),
        "shard_size": shard_size,
        "saelab_version": __version__,
    }
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype={storage_dtype!r}: choose one of {sorted(STORAGE_DTYPES)}")
    if storage_dtype != "float32":  # recorded (and keyed) only when not the default, so float32 keys stay as before
        meta["storage_dtype"] = storage_dtype
    meta["cache_key"] = sha256_text(*(f"{k}={meta[k]}" for k in sorted(meta) if k != "dataset"))
    extractor = _Extractor(model, hooks, pooling, batch_size, include_bos, positions, max_length, allow_missing,
                           STORAGE_DTYPES[storage_dtype])
    shards = [range(start, min(start + shard_size, len(texts))) for start in range(0, len(texts), shard_size)]
    return extractor, texts, shards, meta


def _cache_folder(cache: bool | str | Path, meta: dict) -> Path:
    folder = Path(cache_dir("activations") / meta["cache_key"][:24]) if cache is True else Path(cache)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"cache={str(folder)!r} is a file, not a folder: pass a folder for the "
                                 "activation cache (it is created when missing), True, or None.")
    return folder


def hook_names(model) -> list[str]:
    """Every hook name the model accepts, including TransformerLens' classic aliases."""
    return sorted(model.hook_dict)


def stop_at_layer(model, hooks: list[str]) -> int | None:
    """The first block not needed by the hooks; None when a hook lies after the last block (final norm, logits)."""
    stops = []
    for name in hooks:
        match = BLOCK_HOOK.match(name)
        if match:
            # a block's input is read before the block runs: stopping at that block still fires it
            reads_input = name.endswith((".hook_resid_pre", ".hook_in"))
            stops.append(int(match.group(1)) + (0 if reads_input else 1))
        elif name.startswith(("embed", "hook_embed", "pos_embed", "hook_pos_embed", "rotary_emb")):
            stops.append(0)
        else:
            return None
    return max(stops)


class _StopForward(Exception):
    """Raised by a hook once every requested activation is captured: the rest of the model never runs."""


def _raise_stop(activation, hook):
    raise _StopForward


class _Extractor:
    """Runs batches of texts through the model and pools their activations; one instance per `extract` call."""

    def __init__(self, model, hooks, pooling, batch_size, include_bos, positions, max_length, allow_missing,
                 storage_dtype=torch.float32):
        self.model, self.hooks, self.pooling, self.storage_dtype = model, hooks, pooling, storage_dtype
        self.batch_size, self.include_bos, self.positions = batch_size, include_bos, positions
        self.max_length, self.allow_missing = max_length, allow_missing
        self.stop_at_layer = stop_at_layer(model, hooks)
        self.tokenizer = model.tokenizer
        self.device = next(model.parameters()).device

    def run(self, texts: list[str], first_index: int) -> dict:
        """Extract one shard of texts; returns per-text tensors in the shard's original order."""
        encoded = self.tokenizer(
            texts, add_special_tokens=True, return_offsets_mapping=self.positions is not None
        )
        n_truncated = sum(len(x) > self.max_length for x in encoded["input_ids"])
        ids = [x[: self.max_length] for x in encoded["input_ids"]]
        keep = [self._kept_positions(i, first_index, texts, ids[i], encoded) for i in range(len(texts))]
        # Similar lengths share a batch: padding is wasted compute.
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        rows: dict[int, dict[str, torch.Tensor]] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, per_hook in zip(batch, self._forward([ids[i] for i in batch], [keep[i] for i in batch])):
                rows[i] = per_hook
        out = {h: [rows[i][h] for i in range(len(texts))] for h in self.hooks}
        out["_lengths"] = [len(k) for k in keep]
        out["_token_ids"] = [torch.tensor([ids[i][p] for p in keep[i]], dtype=torch.long) for i in range(len(texts))]
        out["_missing"] = [first_index + i for i, k in enumerate(keep) if not k]
        out["_n_truncated"] = n_truncated
        out["_n_tokens"] = sum(len(i) for i in ids)
        return out

    def _kept_positions(self, i: int, first_index: int, texts: list[str], ids: list[int], encoded) -> list[int]:
        has_bos = self.tokenizer.bos_token_id is not None and ids[:1] == [self.tokenizer.bos_token_id]
        if self.positions is None:
            start = 0 if (self.include_bos or not has_bos) else 1
            if start >= len(ids) and not self.allow_missing:  # pooling nothing would give a silent NaN row
                raise ValueError(
                    f"Text {first_index + i} has no token left to pool ({texts[i][:80]!r}): max_length="
                    f"{self.max_length} keeps {len(ids)} token(s) and BOS is left out. Raise max_length, pass "
                    "include_bos=True, or allow_missing=True to fill NaN and record it in meta['missing']."
                )
            return list(range(start, len(ids)))
        offsets = [tuple(o) for o in encoded["offset_mapping"][i][: len(ids)]]
        info = TextTokens(first_index + i, texts[i], list(ids), offsets)
        chosen = sorted(set(int(p) for p in self.positions(info)))
        if any(p < 0 or p >= len(ids) for p in chosen):
            raise ValueError(f"Position selector returned {chosen} for text {first_index + i} of {len(ids)} tokens: "
                             f"it must return positions between 0 and {len(ids) - 1} (0 is BOS; texts are cut to "
                             f"max_length={self.max_length} tokens).")
        if not chosen and not self.allow_missing:
            raise ValueError(
                f"The position selector found no position in text {first_index + i}: {texts[i][:80]!r}. "
                "Fix the text or selector, or pass allow_missing=True to fill NaN and record it in meta['missing']."
            )
        return chosen

    @torch.no_grad()
    def _forward(self, batch_ids: list[list[int]], batch_keep: list[list[int]]) -> list[dict[str, torch.Tensor]]:
        width = max(len(x) for x in batch_ids)
        pad = self.tokenizer.pad_token_id or 0
        # Left padding, as Gemma's tokenizer does: position p of a text sits at column width - len + p.
        tokens = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=self.device)
        captured: dict[str, torch.Tensor] = {}

        def capture(activation, hook, name):
            captured[name] = activation

        fwd_hooks = [(name, functools.partial(capture, name=name)) for name in self.hooks]
        stop = self.stop_at_layer
        if stop is not None and stop >= self.model.cfg.n_layers:
            # The bridge's stop_at_layer cannot stop after the last block; stopping at the final norm spares
            # the unembedding, which for Gemma's 262k-token vocabulary costs as much as all blocks together.
            fwd_hooks.append(("ln_final.hook_in", _raise_stop))
            stop = None
        with self.model.hooks(fwd_hooks=fwd_hooks), contextlib.suppress(_StopForward):
            self.model(tokens, attention_mask=mask, stop_at_layer=stop)
        cache = captured
        results = []
        for row, (ids, keep) in enumerate(zip(batch_ids, batch_keep)):
            columns = [width - len(ids) + p for p in keep]
            results.append({h: self._stored(self._pool(cache[h][row, columns].float().cpu()), h)
                            for h in self.hooks})
        return results

    def _stored(self, x: torch.Tensor, hook: str) -> torch.Tensor:
        if self.storage_dtype == torch.float16 and x.abs().max() > torch.finfo(torch.float16).max:
            raise ValueError(f"an activation at {hook} is {float(x.abs().max()):.4g}, beyond float16's range: "
                             "use storage_dtype='bfloat16' (same range as float32) or 'float32'")
        return x.to(self.storage_dtype)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "none":
            return x
        segment = torch.zeros(len(x), dtype=torch.long)
        return pool_segments(x, segment, torch.tensor([len(x)]), self.pooling)[0]


def pool_segments(x: torch.Tensor, segment: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool rows of `x` that share a segment id; an empty segment gives NaN (a recorded gap, never a silent 0)."""
    n = len(lengths)
    if pooling == "last":
        out = x[(lengths.cumsum(0) - 1).clamp(min=0)].clone()
    elif pooling == "max":
        out = torch.full((n, x.shape[1]), float("-inf"), dtype=x.dtype)
        out.scatter_reduce_(0, segment[:, None].expand_as(x), x, reduce="amax")
    else:
        out = torch.zeros((n, x.shape[1]), dtype=x.dtype).index_add_(0, segment, x)
        if pooling == "mean":
            out /= lengths.clamp(min=1)[:, None].to(x.dtype)
    out[lengths == 0] = float("nan")
    return out


def as_activations(tensors: dict, hooks, pooling, meta, folder) -> Activations:
    """An `Activations` from the tensors an extraction or a cache read gives (one per hook, lengths, token ids)."""
    return Activations(
        hooks=list(hooks), pooling=pooling, acts={h: tensors[h] for h in hooks}, lengths=tensors["lengths"],
        token_ids=tensors["token_ids"] if pooling == "none" else None, meta=meta, folder=folder,
    )


def load_activations(folder: str | Path, verify: bool = True) -> Activations:
    """Load a cached extraction; with `verify`, every shard's checksum is checked first."""
    folder = Path(folder)
    tensors, meta = read_cache(folder, verify)
    return as_activations(tensors, meta["hooks"], meta["pooling"], meta, folder)


__all__ = [
    "POOLINGS",
    "Activations",
    "LastOccurrence",
    "TextTokens",
    "as_activations",
    "STORAGE_DTYPES",
    "extract",
    "extract_to_cache",
    "hook_names",
    "last_occurrence",
    "load_activations",
    "plan_extraction",
]
