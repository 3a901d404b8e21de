"""Latent dashboards and the figures the notebooks share (notebooks 02, 04, 05, 06).

A latent dashboard answers two questions about one SAE latent: *when does it fire?* (its top-activating contexts,
contexts sampled from each band of its activation distribution, a histogram of its activations) and *what does it
write?* (the logit lens: its decoder row pushed through the model's final norm and unembedding, read as the tokens
it promotes and suppresses).

Build the data once for all latents (`saelab.latents`), then open as many dashboards as you like:

    records = latent_records(model, sae, texts)          # saelab.latents: one pass, a running top-k per latent
    latent_dashboard(records, 123, model=model, sae=sae)  # HTML that renders in a saved notebook
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from saelab.latents import HIST_BINS, HIST_LOG10_RANGE, LatentRecords, logit_lens
from saelab.metrics import activation_density_histogram

# ------------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------------


def show_token(token: str) -> str:
    """HTML for a token: escaped, with whitespace made visible where it would vanish."""
    token = token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    return html.escape(token) if token else "∅"


def context_html(tokens: list[tuple[str, float | None, bool]], max_act: float, color: str = "255,120,0") -> str:
    """One context as a line of tokens, each shaded by its activation (the central token outlined)."""
    spans = []
    for token, act, centre in tokens:
        alpha = 0.0 if not act or max_act <= 0 else min(1.0, max(0.0, act / max_act))
        style = f"background:rgba({color},{alpha:.2f});"
        if centre:
            style += "outline:1.5px solid #333;font-weight:600;"
        tip = f"{act:.3g}" if act is not None else ""
        spans.append(f'<span style="{style}" title="{tip}">{show_token(token)}</span>')
    return "".join(spans)


def _figure_html(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" style="max-width:340px"/>'


def plot_activation_histogram(records: LatentRecords, latent: int, ax=None):
    """Histogram of a latent's non-zero activations (exact counts, log-spaced bins)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    i = records.position(latent)
    counts = records.hist_counts[i].numpy()
    edges = np.linspace(*HIST_LOG10_RANGE, HIST_BINS + 1)  # log10 units, as seaborn's log_scale takes its bins
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 2.6))
    used = np.nonzero(counts)[0]
    if len(used):
        a, b = max(0, used[0] - 1), min(HIST_BINS, used[-1] + 2)
        # the counts are binned already: one value per bin (its centre), weighted by the bin's count
        sns.histplot(x=10 ** ((edges[a:b] + edges[a + 1:b + 1]) / 2), weights=counts[a:b],
                     bins=edges[a:b + 1].tolist(), log_scale=True, color="tab:orange", ax=ax)
    else:
        ax.text(0.5, 0.5, "never fired", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="activation", ylabel="tokens", title=f"latent {latent}: activations where it fires")
    return ax.figure


def _logit_table(pairs: list[tuple[str, float]], color: str) -> str:
    rows = "".join(f'<tr><td style="text-align:left;font-family:monospace;background:rgba({color},0.15)">'
                   f'{show_token(t)}</td><td style="text-align:right">{v:+.2f}</td></tr>' for t, v in pairs)
    return f'<table style="font-size:12px;border-collapse:collapse">{rows}</table>'


def quantile_bands(records: LatentRecords, latent: int, n_bands: int = 4) -> list[dict[str, Any]]:
    """A latent's sampled firing tokens split into `n_bands` equal-count bands of activation (lowest first).

    Each band: {"low", "high" (activation range), "entries": [(act, row, window), ...] in random order}.
    """
    acts, rows, wins = records.sample_entries(latent)
    if len(acts) == 0:
        return []
    order = acts.argsort()
    bands = []
    for chunk in np.array_split(order.numpy(), min(n_bands, len(order))):
        chosen = torch.as_tensor(chunk)
        entries = sorted(zip(acts[chosen].tolist(), rows[chosen].tolist(), wins[chosen]), key=lambda e: e[1])
        bands.append({"low": float(acts[chosen].min()), "high": float(acts[chosen].max()), "entries": entries})
    return bands


class LatentDashboard:
    """A latent's dashboard as HTML (`.html`); displays itself in a notebook and survives in saved outputs."""

    def __init__(self, html_text: str, latent: int):
        self.html, self.latent = html_text, latent

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"LatentDashboard(latent={self.latent})"


def latent_dashboard(records: LatentRecords, latent: int, model=None, sae=None, *, top_n: int = 10,
                     n_bands: int = 4, per_band: int = 3, n_logits: int = 8) -> LatentDashboard:
    """The dashboard of one latent: statistics, histogram, logit lens (given model and sae), top contexts and
    contexts from each quantile band of its activations."""
    stats = records.stats(latent)
    max_act = stats["max_act"]
    parts = ['<div style="font-family:sans-serif;font-size:13px;max-width:900px">',
             (f'<h3 style="margin:4px 0">Latent {latent}'
              f'{" · " + html.escape(records.hook_name) if records.hook_name else ""}</h3>'),
             (f'<p style="margin:2px 0">fires on {stats["fire_count"]:,} of {stats["n_tokens"]:,} tokens '
              f'(density {100 * stats["density"]:.3g}%) · max activation {max_act:.3g} · '
              f'mean when firing {stats["mean_act_when_firing"]:.3g}</p>')]
    if stats["fire_count"] == 0:
        parts.append(f'<p style="color:#a00">This latent never fired on these {stats["n_tokens"]:,} tokens '
                     "(a dead latent, or one for text unlike these).</p>")
    figure = _figure_html(plot_activation_histogram(records, latent))
    lens = ""
    if model is not None and sae is not None:
        result = logit_lens(model, sae, latent, k=n_logits, tokenizer=records.tokenizer)
        lens = (f'<div style="margin-left:16px"><b>promotes</b>{_logit_table(result["top"], "0,120,255")}</div>'
                f'<div style="margin-left:16px"><b>suppresses</b>{_logit_table(result["bottom"], "255,0,0")}</div>')
    parts.append(f'<div style="display:flex;align-items:flex-start">{figure}{lens}</div>')
    if stats["fire_count"]:
        line_style = 'style="font-family:monospace;white-space:pre;margin:1px 0;overflow:hidden"'
        parts.append("<h4 style='margin:8px 0 2px'>Top activations</h4>")
        acts, rows, wins = records.top_entries(latent)
        for act, row, win in list(zip(acts.tolist(), rows.tolist(), wins))[:top_n]:
            line = context_html(records.context(row, win), max_act)
            parts.append(f'<div {line_style}><span style="color:#666">{act:8.3g} </span>{line}</div>')
        parts.append("<h4 style='margin:8px 0 2px'>Quantile samples (random firing tokens, by activation band)</h4>")
        for band in reversed(quantile_bands(records, latent, n_bands)):
            parts.append(f"<div style='color:#555;margin-top:4px'>activations {band['low']:.3g} – "
                         f"{band['high']:.3g}</div>")
            for act, row, win in band["entries"][:per_band]:
                line = context_html(records.context(row, win), max_act)
                parts.append(f'<div {line_style}><span style="color:#666">{act:8.3g} </span>{line}</div>')
    parts.append("</div>")
    return LatentDashboard("\n".join(parts), int(latent))


# ------------------------------------------------------------------------------------------------------------------
# Figures the notebooks share
# ------------------------------------------------------------------------------------------------------------------


def plot_sparsity_frontier(results: Sequence[dict[str, Any]], y: str = "explained_variance", x: str = "l0",
                           group: str = "architecture", ax=None, label_key: str | None = None):
    """One line per group (e.g. architecture) of `y` against `x` (e.g. L0), from a list of result dicts."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(str(r[group]), []).append(r)
    for name, rows in groups.items():
        rows = sorted(rows, key=lambda r: r[x])
        ax.plot([r[x] for r in rows], [r[y] for r in rows], "o-", label=name)
        if label_key:
            for r in rows:
                ax.annotate(str(r[label_key]), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    names = {"l0": "L0 (active latents per token)", "ce_loss_score": "CE loss score"}
    ax.set(xlabel=names.get(x, x.replace("_", " ")), ylabel=names.get(y, y.replace("_", " ")), xscale="log")
    # powers of two, written plainly: L0 values such as 16, 32, 64 read better than 2x10^1
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8)
    return ax.figure


def plot_feature_density(densities: dict[str, torch.Tensor], ax=None, bins: int = 40):
    """Histograms of log10 latent density, one per SAE (dead latents counted in the legend)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.linspace(-6, 0, bins + 1)
    labels, frames = [], []
    for name, density in densities.items():  # counted by metrics.activation_density_histogram, drawn by seaborn
        hist = activation_density_histogram(density, bins=edges)
        labels.append(f"{name} ({hist['n_dead']} dead)")
        frames.append(pd.DataFrame({"log10 density": (edges[:-1] + edges[1:]) / 2, "latents": hist["counts"],
                                    "SAE": labels[-1]}))
    sns.histplot(pd.concat(frames), x="log10 density", weights="latents", hue="SAE", hue_order=labels,
                 bins=edges.tolist(), element="step", fill=False, ax=ax)
    ax.set(xlabel="log10 latent density (share of tokens it fires on)", ylabel="latents")
    sns.move_legend(ax, "best", fontsize=8, title=None)
    return ax.figure


__all__ = [
    "LatentDashboard", "context_html", "latent_dashboard", "plot_activation_histogram", "plot_feature_density",
    "plot_sparsity_frontier", "quantile_bands",
]
