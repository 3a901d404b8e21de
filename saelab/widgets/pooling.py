"""The pooling explorer (notebook 01): one text, one hook, several poolings — which tokens make the vector?

    saelab.widgets.pooling_explorer(model, texts=topics.train.texts[:8])   # last line of a notebook cell

A classifier needs one vector per text, and the pooling decides which tokens that vector listens to. For a chosen
(or typed) text, hook and layer the explorer shows each token's norm and, for each pooling, the pooled vector's
norm and each token's *share* of it:

- mean and sum: token t's share is its projection on the pooled vector p, ``x_t · p / (n |p|²)`` for the mean
  (``x_t · p / |p|²`` for the sum); the shares add up to 1 and are equal for both poolings (sum = n × mean);
- max: the fraction of the d dimensions whose maximum comes from token t (they add up to 1);
- last: the last token has it all.

Ticking "include BOS" shows why `saelab.extract` leaves BOS out: in Gemma 3 its huge norm swamps the others.
The pooled vectors themselves come from `Activations.pool`, the code `saelab.extract` uses.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from saelab.activations import Activations, extract
from saelab.viz import context_html, show_token
from saelab.widgets._common import StatusBar, WidgetInputError, show_html

POOLED = ("mean", "max", "sum", "last")  # the poolings that give one vector per text
SITES = ("resid_post", "resid_pre", "attn_out", "mlp_out")  # hook points offered, per block


@dataclass
class PoolingSummary:
    """The tokens of one text at one hook, and how each pooling weighs them."""

    text: str
    hook: str
    include_bos: bool
    tokens: list[str]
    norms: torch.Tensor  # [n_tokens] L2 norm of each token's activation
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)  # pooling -> [d] pooled vector
    shares: dict[str, torch.Tensor] = field(default_factory=dict)  # pooling -> [n_tokens], adds up to 1

    def dominant(self, pooling: str, n: int = 3) -> list[tuple[str, float]]:
        """The `n` tokens with the largest share of a pooling, with their shares."""
        share = self.shares[pooling]
        order = share.argsort(descending=True)[:n].tolist()
        return [(self.tokens[i], float(share[i])) for i in order]

    def cosine(self, a: str, b: str) -> float:
        return float(torch.nn.functional.cosine_similarity(self.pooled[a], self.pooled[b], dim=0))


def token_shares(rows: torch.Tensor, pooled: torch.Tensor, pooling: str) -> torch.Tensor:
    """Each token's share of a pooled vector (see the module docstring); the shares add up to 1."""
    n = len(rows)
    if pooling in ("mean", "sum"):
        squared = pooled.dot(pooled)
        if squared == 0:
            return torch.full((n,), 1.0 / n)
        scale = n if pooling == "mean" else 1
        return rows @ pooled / (scale * squared)
    if pooling == "max":
        return torch.bincount(rows.argmax(dim=0), minlength=n).float() / rows.shape[1]
    if pooling == "last":
        return torch.nn.functional.one_hot(torch.tensor(n - 1), n).float()
    raise ValueError(f"Unknown pooling '{pooling}'. Choose from {POOLED}.")


def pooling_summary(model, text: str, hook: str, poolings: Sequence[str] = POOLED, include_bos: bool = False,
                    token_acts: Activations | None = None) -> PoolingSummary:
    """Extract `text` at `hook` token by token, pool it each way, and work out each token's share.

    `token_acts` reuses a token-level extraction (``pooling="none"``) of that one text made with the same
    `include_bos`.
    """
    if not isinstance(text, str) or not text.strip():
        raise WidgetInputError("The text is empty: pick an example or type a sentence, then press Enter.")
    unknown = [p for p in poolings if p not in POOLED]
    if unknown:
        raise WidgetInputError(f"Unknown pooling(s) {unknown}: choose from {list(POOLED)}.")
    if token_acts is None:
        token_acts = extract(model, [text], hook, pooling="none", include_bos=include_bos, progress=False)
    rows = token_acts[hook]
    tokens = [model.tokenizer.decode([int(t)]) for t in token_acts.token_ids]
    summary = PoolingSummary(text, hook, include_bos, tokens, rows.norm(dim=-1))
    for pooling in poolings:
        pooled = token_acts.pool(pooling)[hook][0]
        summary.pooled[pooling] = pooled
        summary.shares[pooling] = token_shares(rows, pooled, pooling)
    return summary


def summary_html(summary: PoolingSummary) -> str:
    """The explorer's display: one line per pooling (norm, dominant tokens, text shaded by share), then a table."""
    n = len(summary.tokens)
    bos = "BOS included" if summary.include_bos else "BOS left out"
    parts = ['<div style="font-family:sans-serif;font-size:13px;max-width:980px">',
             f'<div style="margin:2px 0"><b>{html.escape(summary.hook)}</b> · {n} tokens ({bos}) · '
             f'token norms {float(summary.norms.min()):.3g} – {float(summary.norms.max()):.3g}</div>',
             '<table style="border-collapse:collapse;margin:4px 0"><tr><th align="left">pooling</th>'
             '<th align="right">norm</th><th align="right">cos(mean)</th><th align="left">dominant tokens</th>'
             '<th align="left">the text, shaded by each token\'s share</th></tr>']
    for pooling, share in summary.shares.items():
        leaders = [(t, s) for i, (t, s) in enumerate(summary.dominant(pooling)) if i == 0 or s >= 0.005]
        dominant = ", ".join(f"{show_token(t)} {100 * s:.0f}%" for t, s in leaders)
        cos = f"{summary.cosine(pooling, 'mean'):.3f}" if "mean" in summary.pooled else "–"
        shaded = context_html([(t, float(s), False) for t, s in zip(summary.tokens, share.tolist())],
                              max(float(share.max()), 1e-12))
        parts.append(f'<tr class="saelab-pooling-row" data-pooling="{pooling}"><td><b>{pooling}</b></td>'
                     f'<td align="right">{float(summary.pooled[pooling].norm()):.4g}</td><td align="right">{cos}</td>'
                     f'<td style="padding:0 8px">{dominant}</td>'
                     f'<td style="font-family:monospace;white-space:pre">{shaded}</td></tr>')
    parts.append("</table>")
    header = "".join(f'<th align="right">{p} share</th>' for p in summary.shares)
    parts.append('<details><summary>per-token numbers</summary><table style="border-collapse:collapse">'
                 f'<tr><th>#</th><th align="left">token</th><th align="right">norm</th>{header}</tr>')
    top_norm = float(summary.norms.max())
    for i, token in enumerate(summary.tokens):
        bar = f'<span style="display:inline-block;height:8px;width:{60 * float(summary.norms[i]) / top_norm:.0f}px;' \
              'background:#4a7;margin-left:4px"></span>'
        cells = "".join(f'<td align="right">{100 * float(s[i]):.1f}%</td>' for s in summary.shares.values())
        parts.append(f'<tr><td>{i}</td><td style="font-family:monospace">{show_token(token)}</td>'
                     f'<td align="right">{float(summary.norms[i]):.4g}{bar}</td>{cells}</tr>')
    parts.append("</table></details></div>")
    return "\n".join(parts)


class PoolingExplorer:
    """Controls (example, text, hook, layer, poolings, include BOS), a status line and the summary display.

    `update()` recomputes from the controls; `last_summary` holds the last `PoolingSummary` shown.
    """

    def __init__(self, model, texts: Sequence[str] | None = None, layer: int | None = None,
                 site: str = "resid_post", poolings: Sequence[str] = POOLED, cache_size: int = 32):
        import ipywidgets as w

        self.model = model
        n_layers = model.cfg.n_layers
        texts = [t for t in (texts or []) if isinstance(t, str) and t.strip()][:20]
        if not texts:
            texts = ["The cat sat on the mat because it was tired."]
        sites = [s for s in SITES if f"blocks.0.hook_{s}" in model.hook_dict]
        if site not in sites:
            raise ValueError(f"Unknown hook site '{site}'; this model offers {sites}.")
        self.last_summary: PoolingSummary | None = None
        self._cache: OrderedDict[tuple, Activations] = OrderedDict()
        self._cache_size = cache_size

        self.example = w.Dropdown(options=[(_label(t), t) for t in texts], value=texts[0], description="example",
                                  layout=w.Layout(width="520px"))
        self.text = w.Text(value=texts[0], description="text", placeholder="type a text and press Enter",
                           continuous_update=False, layout=w.Layout(width="720px"))
        self.site = w.Dropdown(options=sites, value=site, description="hook", layout=w.Layout(width="220px"))
        self.layer = w.IntSlider(value=n_layers // 2 if layer is None else layer, min=0, max=n_layers - 1,
                                 description="layer", continuous_update=False, layout=w.Layout(width="360px"))
        self.poolings = {p: w.Checkbox(value=p in poolings, description=p, indent=False,
                                       layout=w.Layout(width="70px")) for p in POOLED}
        self.include_bos = w.Checkbox(value=False, description="include BOS", indent=False,
                                      layout=w.Layout(width="120px"))
        self.status_bar = StatusBar()
        self.output = w.Output()
        self.widget = w.VBox([
            self.example, self.text,
            w.HBox([self.site, self.layer]),
            w.HBox([w.Label("poolings:"), *self.poolings.values(), self.include_bos]),
            self.status_bar.widget, self.output,
        ])
        self.widget.add_class("saelab-pooling-explorer")
        self.example.observe(self._from_example, names="value")
        for control in (self.text, self.site, self.layer, self.include_bos, *self.poolings.values()):
            control.observe(self._from_control, names="value")
        self.update()

    @property
    def hook(self) -> str:
        return f"blocks.{self.layer.value}.hook_{self.site.value}"

    def update(self) -> bool:
        """Recompute the summary from the controls and show it; a message instead on bad input."""
        ok, _ = self.status_bar.run(self._update, busy=f"extracting {self.hook} and pooling…",
                                    action="pool this text")
        if not ok:
            self.output.clear_output()  # a summary of other settings would mislead next to the message
        return ok

    def _update(self) -> None:
        chosen = [p for p, box in self.poolings.items() if box.value]
        if not chosen:
            raise WidgetInputError("Tick at least one pooling (mean, max, sum or last).")
        text, hook, bos = self.text.value, self.hook, self.include_bos.value
        if not text.strip():
            raise WidgetInputError("The text is empty: pick an example or type a sentence, then press Enter.")
        summary = pooling_summary(self.model, text, hook, chosen, bos, token_acts=self._token_acts(text, hook, bos))
        self.last_summary = summary
        show_html(self.output, summary_html(summary))
        leaders = "; ".join(f"{p}: {summary.dominant(p, 1)[0][0]!r} {100 * summary.dominant(p, 1)[0][1]:.0f}%"
                            for p in chosen)
        self.status_bar.info(f"{len(summary.tokens)} tokens at {hook}. Largest share — {leaders}")

    def _token_acts(self, text: str, hook: str, include_bos: bool) -> Activations:
        key = (text, hook, include_bos)
        if key not in self._cache:
            self._cache[key] = extract(self.model, [text], hook, pooling="none", include_bos=include_bos,
                                       progress=False)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def _from_example(self, change: dict) -> None:
        if change["new"] is not None and change["new"] != self.text.value:
            self.text.value = change["new"]  # the text box's observer recomputes

    def _from_control(self, change: dict) -> None:
        self.update()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _label(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def pooling_explorer(model, texts: Sequence[str] | None = None, layer: int | None = None,
                     site: str = "resid_post", poolings: Sequence[str] = POOLED) -> PoolingExplorer:
    """An interactive pooling explorer: choose or type a text, a hook and layer, and poolings; see which tokens
    dominate each pooled vector. Display the returned object (last expression of a cell) to see it."""
    return PoolingExplorer(model, texts=texts, layer=layer, site=site, poolings=poolings)


__all__ = [
    "POOLED",
    "SITES",
    "PoolingExplorer",
    "PoolingSummary",
    "pooling_explorer",
    "pooling_summary",
    "summary_html",
    "token_shares",
]
