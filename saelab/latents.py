"""Latent records and the logit lens: what a latent fires on and what it writes (notebooks 02, 04, 05, 06).

The data behind a latent's dashboard (`saelab.viz.latent_dashboard`), also read by the method modules: steering's
selection criteria and interpretability proxies (`LatentRecords`, `latent_logits`), probing's zero-shot read-out
(`final_norm_and_unembed`).

    records = latent_records(model, sae, texts)          # one pass: extract, encode, keep a running top-k
    records.top_context_texts(123, 8)                    # latent 123's top-activating contexts as plain text
    logit_lens(model, sae, 123)                          # the tokens its decoder row promotes and suppresses

`latent_records` never holds every token's latents: per batch of texts it encodes the tokens and merges the
batch's best tokens for each latent into a running top-k (and a uniform random sample of each latent's firing
tokens, kept with the same top-k on random keys). Counts, maxima and a log-binned histogram are exact.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from saelab.activations import extract
from saelab.checks import check_latent, check_latents

# Histogram of activations on a log10 scale: 0.1 decade per bin from 1e-4 to 1e6 covers any SAE we meet.
HIST_LOG10_RANGE = (-4.0, 6.0)
HIST_BINS = 100
_EMPTY = -1  # marks an unused slot in the running top-k (row index)


# ------------------------------------------------------------------------------------------------------------------
# The records: everything a dashboard shows, computed in one pass
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class LatentRecords:
    """Per-latent statistics and example contexts for a set of latents, from one pass over some texts.

    Rows are the tokens of the texts in order (BOS left out, as in `saelab.extract`); `text_offsets[i]` is text
    i's first row. For each tracked latent (`latents`, ascending), the `top_n` largest activations and, as a
    uniform random sample of the tokens where it fires, up to `n_samples` more, each with its row and the
    latent's activations on a window of tokens around it (`window` = tokens before, tokens after; NaN outside
    the text).
    """

    latents: torch.Tensor  # [n] latent ids, ascending
    d_sae: int
    n_tokens: int
    token_ids: torch.Tensor  # [n_tokens]
    text_offsets: torch.Tensor  # [n_texts + 1]
    fire_count: torch.Tensor  # [n] tokens on which the latent is > 0
    act_sum: torch.Tensor  # [n] sum of its activations (float64)
    max_act: torch.Tensor  # [n]
    hist_counts: torch.Tensor  # [n, HIST_BINS] counts of log10(activation) among firing tokens
    top_acts: torch.Tensor  # [n, top_n] descending; 0 in unused slots
    top_rows: torch.Tensor  # [n, top_n]; -1 in unused slots
    top_windows: torch.Tensor  # [n, top_n, left + 1 + right]
    sample_acts: torch.Tensor  # [n, n_samples]; uniform sample of firing tokens, 0 in unused slots
    sample_rows: torch.Tensor  # [n, n_samples]; -1 in unused slots
    sample_windows: torch.Tensor  # [n, n_samples, left + 1 + right]
    window: tuple[int, int]
    hook_name: str | None = None
    model_name: str | None = None
    texts: list[str] | None = None
    tokenizer: Any = field(default=None, repr=False)
    _token_str_cache: dict[int, str] = field(default_factory=dict, repr=False)

    # ---- lookup ---------------------------------------------------------------------------------------------

    def position(self, latent: int) -> int:
        """Index of `latent` in the tracked latents; a ValueError that says what went wrong otherwise."""
        latent = check_latent(latent, self.d_sae)
        i = int(torch.searchsorted(self.latents, latent))
        if i >= len(self.latents) or int(self.latents[i]) != latent:
            raise ValueError(f"Latent {latent} was not recorded: these records track {len(self.latents):,} of the "
                             f"{self.d_sae:,} latents. Pass latents=[..., {latent}] to latent_records to add it.")
        return i

    def density(self, latent: int | None = None) -> torch.Tensor | float:
        """Share of tokens on which a latent fires (all tracked latents when `latent` is None)."""
        density = self.fire_count.double() / max(1, self.n_tokens)
        return density if latent is None else float(density[self.position(latent)])

    def stats(self, latent: int) -> dict[str, float]:
        i = self.position(latent)
        fired = int(self.fire_count[i])
        return {"latent": int(latent), "n_tokens": self.n_tokens, "fire_count": fired,
                "density": fired / max(1, self.n_tokens), "max_act": float(self.max_act[i]),
                "mean_act_when_firing": float(self.act_sum[i] / fired) if fired else 0.0}

    def token_str(self, token_id: int) -> str:
        """How a token reads (decoded alone); the id in angle brackets when there is no tokenizer."""
        token_id = int(token_id)
        if token_id not in self._token_str_cache:
            if self.tokenizer is None:
                text = f"<{token_id}>"
            else:
                text = self.tokenizer.decode([token_id])
            self._token_str_cache[token_id] = text
        return self._token_str_cache[token_id]

    def top_entries(self, latent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A latent's top activations, their rows and their windows, best first (unused slots left out)."""
        return self._used(latent, self.top_acts, self.top_rows, self.top_windows)

    def sample_entries(self, latent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A latent's sampled firing tokens: activations, rows and windows, in random order (unused slots left out)."""
        return self._used(latent, self.sample_acts, self.sample_rows, self.sample_windows)

    def _used(self, latent: int, acts: torch.Tensor, rows: torch.Tensor,
              windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The slots of a running top-k table that hold a token: a row was written there and the latent fired."""
        i = self.position(latent)
        used = (rows[i] != _EMPTY) & (acts[i] > 0)
        return acts[i][used], rows[i][used], windows[i][used]

    def top_tokens(self, latent: int, n: int = 5) -> list[tuple[str, float]]:
        """The tokens at a latent's top activations (distinct, best first), with their best activation."""
        acts, rows, _ = self.top_entries(latent)
        seen: dict[str, float] = {}
        for act, row in zip(acts.tolist(), rows.tolist()):
            token = self.token_str(int(self.token_ids[row]))
            seen.setdefault(token, act)
            if len(seen) == n:
                break
        return list(seen.items())

    def text_of_row(self, row: int) -> int:
        return int(torch.searchsorted(self.text_offsets, int(row), right=True)) - 1

    def search(self, query: str, n_tokens: int = 5, limit: int = 50) -> list[tuple[int, str, float]]:
        """Latents whose top tokens contain `query` (case-insensitive), as (latent, token, activation),
        strongest first."""
        query = query.strip().lower()
        if not query:
            return []
        hits = []
        for latent in self.latents.tolist():
            for token, act in self.top_tokens(latent, n_tokens):
                if query in token.strip().lower():
                    hits.append((latent, token, act))
                    break
        return sorted(hits, key=lambda hit: -hit[2])[:limit]

    def context(self, row: int, window_acts: torch.Tensor) -> list[tuple[str, float | None, bool]]:
        """(token, activation, is_centre) for the window around `row` (tokens outside the text dropped)."""
        left = self.window[0]
        out = []
        for offset, act in enumerate(window_acts.tolist()):
            if math.isnan(act):
                continue
            r = row - left + offset
            out.append((self.token_str(int(self.token_ids[r])), act, offset == left))
        return out

    # ---- contexts as plain text -----------------------------------------------------------------------------

    def window_text(self, row: int, window: tuple[int, int] | None = None) -> str:
        """The text of the tokens around token `row` (within its own text); `window` defaults to the records'."""
        left, right = window or self.window
        t = self.text_of_row(row)
        first, last = int(self.text_offsets[t]), int(self.text_offsets[t + 1])
        ids = self.token_ids[max(first, row - left):min(last, row + right + 1)].tolist()
        if self.tokenizer is None:
            return " ".join(f"<{i}>" for i in ids)
        return self.tokenizer.decode(ids)

    def top_context_texts(self, latent: int, n: int = 10) -> list[str]:
        """A latent's top-activating contexts as plain text (best first; fewer if it fired less often)."""
        _, rows, _ = self.top_entries(latent)
        return [self.window_text(int(r)) for r in rows[:n].tolist()]

    def random_context_texts(self, n: int, seed: int = 0) -> list[str]:
        """Contexts around uniformly drawn tokens of the texts: the chance level for the coherence of contexts."""
        rng = random.Random(seed)
        return [self.window_text(rng.randrange(self.n_tokens)) for _ in range(n)]

    def __repr__(self) -> str:
        return (f"LatentRecords({len(self.latents):,} latents of {self.d_sae:,}, {self.n_tokens:,} tokens, "
                f"{len(self.text_offsets) - 1:,} texts, hook={self.hook_name!r})")


class _RunningTopK:
    """For each of n latents, the k entries with the largest keys seen so far: key, value, row and a window.

    `update` takes a batch's non-zero entries (rows, cols, keys, values): it ranks them within each latent, keeps
    each latent's k best, gathers their windows, and merges them with the running table. Work is proportional to
    the number of non-zero entries, never to tokens x latents; the result equals a top-k over every entry ever
    seen (tested against brute force).
    """

    def __init__(self, k: int, n: int, width: int):
        self.k, self.n = k, n
        self.keys = torch.full((n, k), -math.inf)
        self.values = torch.zeros(n, k)
        self.rows = torch.full((n, k), _EMPTY, dtype=torch.long)
        self.windows = torch.full((n, k, width), math.nan)

    def update(self, rows: torch.Tensor, cols: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               row0: int, windows_fn) -> None:
        if len(rows) == 0:
            return
        # rank each entry within its latent: sort by key (descending), then stably by latent
        order = keys.argsort(descending=True, stable=True)
        order = order[cols[order].argsort(stable=True)]
        c = cols[order]
        counts = torch.bincount(c, minlength=self.n)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(len(c)) - starts[c]
        chosen = order[rank < self.k]
        slot = rank[rank < self.k]
        col = cols[chosen]
        # this batch's candidates in a [n, k] table, merged with the running one
        cand_keys = torch.full((self.n, self.k), -math.inf)
        cand_keys[col, slot] = keys[chosen]
        cand_entry = torch.full((self.n, self.k), -1, dtype=torch.long)
        cand_entry[col, slot] = chosen
        all_keys = torch.cat([self.keys, cand_keys], dim=1)
        best = all_keys.topk(self.k, dim=1).indices  # [n, k] into the 2k columns
        latent, place = (best >= self.k).nonzero(as_tuple=True)  # slots a candidate of this batch takes
        if len(latent) == 0:
            return
        entry = cand_entry[latent, best[latent, place] - self.k]
        latent, place, entry = latent[entry >= 0], place[entry >= 0], entry[entry >= 0]
        width = self.windows.shape[-1]
        old = best.clamp(max=self.k - 1)
        self.keys = all_keys.gather(1, best)
        self.values = self.values.gather(1, old)
        self.rows = self.rows.gather(1, old)
        self.windows = self.windows.gather(1, old[..., None].expand(-1, -1, width))
        self.values[latent, place] = values[entry]
        self.rows[latent, place] = rows[entry] + row0
        self.windows[latent, place] = windows_fn(rows[entry], latent)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _token_batches(model, sae, texts, hook, activations, batch_texts, max_length) -> Iterator[tuple]:
    """Yield (x [tokens, d_in], token_ids [tokens], lengths [texts]) for consecutive groups of whole texts."""
    if activations is not None:
        if activations.pooling != "none":
            raise ValueError("latent_records needs token-level activations: extract them with pooling='none'.")
        hook = hook or activations.hooks[0]
        x_all, offsets = activations[hook], activations.offsets
        for start in range(0, len(activations.lengths), batch_texts):
            end = min(start + batch_texts, len(activations.lengths))
            a, b = int(offsets[start]), int(offsets[end])
            yield x_all[a:b], activations.token_ids[a:b], activations.lengths[start:end]
        return

    for start in range(0, len(texts), batch_texts):
        acts = extract(model, texts[start:start + batch_texts], hook, pooling="none", max_length=max_length,
                       progress=False)
        yield acts.tensor, acts.token_ids, acts.lengths


@torch.no_grad()
def latent_records(
    model,
    sae,
    texts: Sequence[str] | None = None,
    hook: str | None = None,
    *,
    activations=None,
    latents: Sequence[int] | None = None,
    top_n: int = 20,
    n_samples: int = 48,
    window: tuple[int, int] = (12, 4),
    batch_texts: int = 64,
    max_length: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> LatentRecords:
    """Everything the latent dashboards show, for every latent (or `latents`), in one pass over `texts`.

    Args:
        model: the TransformerLens bridge the SAE reads (its tokenizer decodes the contexts).
        sae: the SAE; `hook` defaults to `sae.cfg.hook_name`.
        texts: texts to run through the model, `batch_texts` at a time (`saelab.extract(..., pooling="none")`).
        activations: instead of texts, a token-level `Activations` (pooling="none") already extracted.
        latents: latent ids to track (default: all). Memory grows with latents x (top_n + n_samples) x window.
        top_n: top-activating tokens kept per latent.
        n_samples: firing tokens kept per latent as a uniform random sample (for the quantile bands).
        window: tokens shown before and after the activating token.
        max_length: texts are truncated to this many tokens.
    """
    if activations is None:
        if texts is None:
            raise ValueError("Give texts (run through the model) or activations= (token-level, pooling='none').")
        if isinstance(texts, str):
            raise TypeError("`texts` must be a list of strings, not a single string: wrap it as [text].")
        texts = list(texts)
    hook = hook or getattr(sae.cfg, "hook_name", None) or (activations.hooks[0] if activations is not None else None)
    if hook is None:
        raise ValueError("The SAE has no hook_name; pass hook= (e.g. 'blocks.6.hook_resid_post').")
    d_sae = sae.cfg.d_sae
    ids = torch.arange(d_sae) if latents is None else torch.as_tensor(sorted({int(i) for i in latents}))
    if len(ids) == 0 or int(ids.min()) < 0 or int(ids.max()) >= d_sae:
        outside = [int(i) for i in ids if not 0 <= int(i) < d_sae]
        raise ValueError(f"latents must be ids between 0 and {d_sae - 1}; got {outside if len(ids) else 'none'}.")
    n, left, right = len(ids), int(window[0]), int(window[1])
    width = left + 1 + right
    offsets_w = torch.arange(-left, right + 1)
    top = _RunningTopK(top_n, n, width)
    sample = _RunningTopK(n_samples, n, width)
    fire_count = torch.zeros(n, dtype=torch.long)
    act_sum = torch.zeros(n, dtype=torch.float64)
    max_act = torch.zeros(n)
    hist = torch.zeros(n * HIST_BINS, dtype=torch.long)
    lo, hi = HIST_LOG10_RANGE
    generator = torch.Generator().manual_seed(seed)
    token_ids, lengths = [], []
    row0 = 0
    total = len(texts) if texts is not None else len(activations.lengths)
    bar = tqdm(total=total, desc="latent records", unit="text", disable=not progress)
    for x, tok, lens in _token_batches(model, sae, texts, hook, activations, batch_texts, max_length):
        bar.update(len(lens))
        token_ids.append(tok)
        lengths.append(lens)
        if len(x) == 0:
            continue
        z = sae.encode(x.to(sae.device, sae.dtype)).float().cpu()
        z = z if latents is None else z[:, ids].contiguous()
        B = len(z)
        text_id = torch.repeat_interleave(torch.arange(len(lens)), lens)
        rows, cols = (z > 0).nonzero(as_tuple=True)
        values = z[rows, cols]

        def windows(r: torch.Tensor, c: torch.Tensor, z=z, text_id=text_id, B=B) -> torch.Tensor:
            pos = r[:, None] + offsets_w  # [m, W]: the latent's activations around each chosen token
            clamped = pos.clamp(0, B - 1)
            valid = (pos >= 0) & (pos < B) & (text_id[clamped] == text_id[r][:, None])
            vals = z.reshape(-1)[clamped * z.shape[1] + c[:, None]]
            return torch.where(valid, vals, torch.full_like(vals, math.nan))

        with _one_thread():  # small scattered ops: threads only contend (10x slower on a busy 2-core machine)
            top.update(rows, cols, values, values, row0, windows)
            sample.update(rows, cols, torch.rand(len(rows), generator=generator), values, row0, windows)
            fire_count += torch.bincount(cols, minlength=n)
            act_sum.index_add_(0, cols, values.double())
            max_act.scatter_reduce_(0, cols, values, reduce="amax")
            if len(rows):
                bins = ((torch.log10(values) - lo) / (hi - lo) * HIST_BINS).floor().long().clamp(0, HIST_BINS - 1)
                hist.index_add_(0, cols * HIST_BINS + bins, torch.ones_like(bins))
        row0 += B
    bar.close()

    top_acts, top_rows, top_windows = top.values, top.rows, top.windows
    sample_acts, sample_rows, sample_windows = sample.values, sample.rows, sample.windows
    all_lengths = torch.cat(lengths) if lengths else torch.zeros(0, dtype=torch.long)
    return LatentRecords(
        latents=ids, d_sae=d_sae, n_tokens=row0,
        token_ids=torch.cat(token_ids) if token_ids else torch.zeros(0, dtype=torch.long),
        text_offsets=torch.cat([torch.zeros(1, dtype=torch.long), all_lengths.cumsum(0)]),
        fire_count=fire_count, act_sum=act_sum, max_act=max_act, hist_counts=hist.reshape(n, HIST_BINS),
        top_acts=top_acts, top_rows=top_rows, top_windows=top_windows,
        sample_acts=sample_acts, sample_rows=sample_rows, sample_windows=sample_windows,
        window=(left, right), hook_name=hook, model_name=getattr(model, "saelab_name", None),
        texts=texts, tokenizer=getattr(model, "tokenizer", None),
    )


# ------------------------------------------------------------------------------------------------------------------
# The logit lens of a latent
# ------------------------------------------------------------------------------------------------------------------


def final_norm_and_unembed(model):
    """The model's own final norm and unembedding: the bridge's `ln_final` and `unembed` on every layout.

    On models whose forward soft-caps the logits (Gemma 2: 30 tanh(logits / 30)) the returned unembedding caps
    them too, so it gives exactly the logits the model computes from the last block's output.
    """
    norm, unembed = getattr(model, "ln_final", None), getattr(model, "unembed", None)
    if norm is None or unembed is None:
        layout = type(getattr(model, "original_model", model)).__name__
        raise TypeError(f"Cannot find the final norm and unembedding (ln_final / unembed) of this model ({layout}): "
                        "the logit lens and label read-outs need a TransformerLens bridge (saelab.load_model).")
    config = getattr(getattr(model, "original_model", None), "config", None)
    cap = getattr(config, "final_logit_softcapping", None)
    if not cap:
        return norm, unembed

    def capped_unembed(h: torch.Tensor) -> torch.Tensor:
        return cap * torch.tanh(unembed(h) / cap)

    return norm, capped_unembed


@torch.no_grad()
def latent_logits(model, sae, latents: int | Sequence[int]) -> torch.Tensor:
    """Logit lens of decoder rows: W_dec[latent] through the model's final norm and unembedding [n, d_vocab].

    The model's own modules are used (Gemma's RMSNorm scales by 1 + weight), and their constant parts are
    removed: norm(d) - norm(0) drops a LayerNorm's bias, unembed(h) - unembed(0) drops b_U, so only the
    direction's own effect remains. Values are logits "as if the direction were the whole residual stream".
    """
    norm, unembed = final_norm_and_unembed(model)
    ids = torch.as_tensor(check_latents(sae, latents), dtype=torch.long)
    param = next(model.parameters())
    d = sae.W_dec[ids.to(sae.W_dec.device)].detach().to(param.device, param.dtype)
    zero = torch.zeros_like(d[:1])
    h = norm(d) - norm(zero)
    logits = unembed(h) - unembed(torch.zeros_like(h[:1]))
    return logits.float().cpu()


def logit_lens(model, sae, latent: int, k: int = 10, tokenizer=None) -> dict[str, list[tuple[str, float]]]:
    """The k tokens a latent's decoder direction promotes most ("top") and suppresses most ("bottom")."""
    logits = latent_logits(model, sae, latent)[0]
    tokenizer = tokenizer or getattr(model, "tokenizer", None)

    def name(i: int) -> str:
        return tokenizer.decode([i]) if tokenizer is not None else f"<{i}>"

    top = logits.topk(k)
    bottom = (-logits).topk(k)
    return {"top": [(name(i), v) for i, v in zip(top.indices.tolist(), top.values.tolist())],
            "bottom": [(name(i), -v) for i, v in zip(bottom.indices.tolist(), bottom.values.tolist())]}

__all__ = [
    "HIST_BINS", "HIST_LOG10_RANGE", "LatentRecords", "final_norm_and_unembed", "latent_logits",
    "latent_records", "logit_lens",
]
