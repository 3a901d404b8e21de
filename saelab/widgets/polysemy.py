"""Notebook 05's explorer: two contexts of one word, their top SAE latents side by side.

    saelab.widgets.polysemy_explorer(model, sae, pairs=task.test)   # last expression of a cell

Pick a WiC pair from the list (its contexts and word fill the boxes), or type two contexts and a word, then press
"compare". The result area shows PS-Eval's verdict (do the two contexts share their top-1 latent?) and each
context's top latents with their activations; latents in both lists are highlighted. Bad input (an empty box, a
word missing from a context, a word of several tokens) gives a message in the widget, never a traceback; the busy
indicator and message line are the shared `saelab.widgets._common.StatusBar`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from saelab.polysemy import READS
from saelab.polysemy_eval import PairExplanation, explain_pair
from saelab.tasks import WiCPair
from saelab.widgets._common import StatusBar

_STATUS_STYLE = "font-family:sans-serif;font-size:13px"
_SHARED = "background:#ffe9a8"


class PolysemyExplorer:
    """Controls (pair picker, two context boxes, a word box, reading, top-k, a compare button) and a result area.

    `compare()` and `select(index)` are the callbacks; they can be called directly too. `status.value` holds the
    last message (`status_bar` is the shared busy indicator + message line), `result.value` the last result
    (HTML), `last` the last `PairExplanation`.
    """

    def __init__(self, model, sae, pairs: Sequence[WiCPair] | None = None, k: int = 8, read: str = "template",
                 max_pairs: int = 500):
        import ipywidgets as w

        if read not in READS:
            raise ValueError(f"read must be one of {READS}, got {read!r}")
        self.model, self.sae = model, sae
        self.pairs = list(pairs or [])[:max_pairs]
        self.last: PairExplanation | None = None
        self._label: int | None = None
        self._glosses: tuple[str, str] | None = None
        options = [("(type your own)", -1)] + [
            (f"{i}: {p.word} · {'same' if p.label == 1 else 'different'} sense{' · ' + p.pos if p.pos else ''}", i)
            for i, p in enumerate(self.pairs)]
        wide = w.Layout(width="640px")
        self.picker = w.Dropdown(options=options, value=-1, description="WiC pair", layout=wide)
        self.context_1 = w.Textarea(placeholder="first context, e.g. 'we sat on the bank of the river'",
                                    description="context 1", layout=wide)
        self.context_2 = w.Textarea(placeholder="second context, e.g. 'the bank raised its interest rates'",
                                    description="context 2", layout=wide)
        self.word = w.Text(placeholder="target word in both contexts, e.g. bank", description="word",
                           layout=w.Layout(width="320px"))
        self.read = w.ToggleButtons(options=list(READS), value=read, description="read",
                                    tooltips=["the word's copy in '... The {word} means'", "the word in the context"])
        self.k = w.IntSlider(value=k, min=1, max=20, description="top k", continuous_update=False)
        self.button = w.Button(description="compare", button_style="primary",
                               tooltip="show both contexts' top latents")
        self.status_bar = StatusBar()
        self.status = self.status_bar.message
        self.result = w.HTML(value="")
        self.widget = w.VBox([self.picker, self.context_1, self.context_2, w.HBox([self.word, self.read]),
                              w.HBox([self.k, self.button]), self.status_bar.widget, self.result])
        self._filling = False
        self.picker.observe(lambda change: self.select(change["new"]), names="value")
        self.button.on_click(lambda _: self.compare())
        for box in (self.context_1, self.context_2, self.word):
            box.observe(self._typed, names="value")
        if self.pairs:
            self.picker.value = 0  # shows the first pair at once
        else:
            self._message("Type two contexts and a word that occurs in both, then press compare.")

    # ---- callbacks ----------------------------------------------------------------------------------------------

    def select(self, index: int) -> PairExplanation | None:
        """Fill the boxes from WiC pair `index` (-1: leave them for typing) and compare."""
        if index is None or index < 0:
            self._label, self._glosses = None, None
            self._message("Type two contexts and a word that occurs in both, then press compare.")
            return None
        if not 0 <= index < len(self.pairs):
            choice = f"pick one of 0 to {len(self.pairs) - 1}" if self.pairs else \
                "this explorer has no WiC pairs; type two contexts and a word instead"
            self._message(f"There is no pair {index}: {choice}.", error=True)
            return None
        pair = self.pairs[index]
        self._filling = True
        try:
            self.context_1.value, self.context_2.value, self.word.value = pair.context_1, pair.context_2, pair.word
        finally:
            self._filling = False
        self._label = pair.label
        self._glosses = (pair.gloss_1, pair.gloss_2) if pair.gloss_1 or pair.gloss_2 else None
        return self.compare()

    def compare(self, context_1: str | None = None, context_2: str | None = None,
                word: str | None = None) -> PairExplanation | None:
        """Explain the pair in the boxes (or the arguments); a message instead on bad input."""
        if context_1 is not None or context_2 is not None or word is not None:
            self._filling = True
            try:
                self.context_1.value = context_1 if context_1 is not None else self.context_1.value
                self.context_2.value = context_2 if context_2 is not None else self.context_2.value
                self.word.value = word if word is not None else self.word.value
            finally:
                self._filling = False
            self._typed(None)
        ok, explanation = self.status_bar.run(
            explain_pair, self.model, self.sae, self.context_1.value, self.context_2.value, self.word.value,
            k=self.k.value, read=self.read.value, label=self._label,
            busy=f"running the model on both contexts of {self.word.value.strip()!r}…")
        if not ok:  # the status bar shows what was wrong and what to do
            self.result.value = ""
            return None
        self.last = explanation
        self.result.value = render_explanation(explanation, self._glosses)
        verdict = "the same top-1 latent" if explanation.same else "different top-1 latents"
        self._message(f"{explanation.word!r}: {verdict} ({explanation.top1[0]} vs {explanation.top1[1]}), "
                      f"{len(explanation.shared)} shared in the top {self.k.value}")
        return explanation

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _typed(self, _change: Any) -> None:
        """Typing in a box makes this a custom pair: its WiC label and glosses no longer apply."""
        if not self._filling:
            self._label, self._glosses = None, None
            if self.picker.value != -1:
                self._filling = True
                try:
                    self.picker.value = -1
                finally:
                    self._filling = False

    def _message(self, text: str, error: bool = False) -> None:
        (self.status_bar.error if error else self.status_bar.info)(text)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def render_explanation(explanation: PairExplanation, glosses: tuple[str, str] | None = None) -> str:
    """HTML: the verdict, then each context's prompt and top latents side by side (shared latents highlighted)."""
    e = explanation
    shared = set(e.shared)
    verdict = "same top-1 latent" if e.same else "different top-1 latents"
    truth = {1: " · WiC label: same sense", 0: " · WiC label: different senses"}.get(e.label, "")
    head = (f'<div style="{_STATUS_STYLE}"><b>{html.escape(e.word)}</b> (token {html.escape(repr(e.target_token))}, '
            f'read: {e.read} copy) → <b>{verdict}</b> ({e.top1[0]} vs {e.top1[1]}) · Jaccard@{max(len(e.top[0]), 1)} '
            f'of the top latents {e.jaccard:.2f}{truth}</div>')
    columns = []
    for c in range(2):
        rows = "".join(
            f'<tr style="{_SHARED if latent in shared else ""}"><td>{rank + 1}</td><td>latent {latent}</td>'
            f'<td style="text-align:right">{act:.3g}</td></tr>' for rank, (latent, act) in enumerate(e.top[c]))
        if not rows:
            rows = '<tr><td colspan="3" style="color:#a00">no latent active</td></tr>'
        gloss = (f'<div style="color:#555;font-style:italic">sense: {html.escape(glosses[c])}</div>'
                 if glosses and glosses[c] else "")
        columns.append(
            f'<div style="margin-right:24px;max-width:420px"><div><b>context {c + 1}</b>: '
            f'{html.escape(e.prompts[c])}</div>{gloss}<table style="font-size:12px;border-collapse:collapse">'
            f'<tr><th>rank</th><th>latent</th><th>activation</th></tr>{rows}</table></div>')
    style = "display:flex;font-family:sans-serif;font-size:13px;margin-top:6px"
    return head + f'<div style="{style}">{"".join(columns)}</div>'


def polysemy_explorer(model, sae, pairs: Sequence[WiCPair] | None = None, k: int = 8,
                      read: str = "template") -> PolysemyExplorer:
    """An interactive PS-Eval explorer for one SAE: pick a WiC pair or type two contexts and a word."""
    return PolysemyExplorer(model, sae, pairs=pairs, k=k, read=read)


__all__ = ["PolysemyExplorer", "polysemy_explorer", "render_explanation"]
