"""Notebook 07's explorer: type a sentence and a noun; see how the model reads the noun (from its SAE code), how
the sentence encoder reads it, whether that is flagged as a misreading, the reformulated prompt, and the model's
answer before and after.

    saelab.widgets.reformulation_explorer(model, sae, encoder=encoder, offset=study.offset)   # last in a cell

The word must be a lemma of the sense inventory (`saelab.tasks.sense_inventory`: the targets of the WordNet tasks;
plurals are found too). Bad input (an empty box, a word missing from the sentence, a word the inventory lacks, a
word with one sense) gives a message in the widget, never a traceback (`saelab.widgets._common.StatusBar`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from saelab import reformulation as rf
from saelab.polysemy import find_word
from saelab.tasks import sense_inventory
from saelab.widgets._common import StatusBar, WidgetInputError

_FONT = "font-family:var(--jp-ui-font-family, sans-serif);font-size:13px"


@dataclass
class SentenceReading:
    """Everything the explorer shows for one sentence."""

    item: rf.SenseItem
    sae: rf.Reading  # the model's reading (SAE codes against the sense prototypes)
    external: rf.Reading  # the sentence encoder's reading
    flagged: bool  # the two readings disagree about the supersense
    prompt: str
    reformulated: str  # the prompt with the encoder's gloss after the word
    probs: tuple[np.ndarray, np.ndarray]  # calibrated label probabilities before and after
    label_words: tuple[str, ...]


def inventory_lemma(word: str, pos: str = "noun") -> str:
    """The inventory lemma of a typed word (lower case; regular plurals undone), or WidgetInputError."""
    inventory = {lemma for lemma, p in sense_inventory() if p == pos}
    w = word.strip().lower().replace(" ", "_")
    candidates = [w, w[:-1] if w.endswith("s") else "", w[:-2] if w.endswith("es") else "",
                  w[:-3] + "y" if w.endswith("ies") else "", w[:-3] + "man" if w.endswith("men") else ""]
    found = next((c for c in candidates if c in inventory), None)
    if found is None:
        raise WidgetInputError(f"{word.strip()!r} is not a {pos} of the sense inventory ({len(inventory)} lemmas: "
                               "the target nouns of the WordNet tasks). Try camp, line, plant, paper or court.")
    return found


def explain_sentence(model, sae, text: str, word: str, *, encoder=None, offset: torch.Tensor | None = None,
                     fmt: rf.PromptFormat = rf.TOPIC_FORMAT, max_senses: int = 6,
                     max_examples: int = 2) -> SentenceReading:
    """Read one sentence as notebook 07 reads its items: both readings, the flag, both prompts' predictions."""
    if not text.strip():
        raise WidgetInputError("The sentence is empty: type a sentence that contains the word.")
    if not word.strip():
        raise WidgetInputError("The word is empty: type the noun to read, e.g. camps.")
    span = find_word(text, word.strip())
    if span is None:
        raise WidgetInputError(f"{word.strip()!r} is not a whole word of the sentence: type it as it is written.")
    lemma = inventory_lemma(word)
    senses = sense_inventory()[(lemma, "noun")][:max_senses]
    if len(senses) < 2:
        raise WidgetInputError(f"{lemma!r} has one sense in WordNet: there is nothing to misread. Try another noun.")
    item = rf.SenseItem(text, text[span[0]:span[1]], span, lemma, "noun", senses)
    hook = sae.cfg.hook_name
    protos = rf.prototypes(model, [item], hook, fmt=fmt, max_examples=max_examples, progress=False)
    external = rf.external_reading([item], encoder, max_examples=max_examples)
    note = item.senses[int(external.choice[0])].gloss
    runs = rf.read_prompts(model, [rf.item_prompt(model, item, None, fmt), rf.item_prompt(model, item, note, fmt)],
                           hook, fmt=fmt, progress=False)
    with torch.no_grad():
        codes = sae.encode(runs.acts[:1].to(sae.W_enc.dtype)).float()
    reading = rf.nearest_sense(codes, protos.encoded(sae), [item], protos, name="SAE codes")
    flagged = bool(rf.disagreement(reading, external, [item])[0] > 0)
    scores = runs.logits.log_softmax(-1) - (offset if offset is not None else 0)
    probs = scores.softmax(-1).numpy()
    return SentenceReading(item, reading, external, flagged, runs.prompts[0], runs.prompts[1], (probs[0], probs[1]),
                           fmt.label_words)


def render_reading(r: SentenceReading) -> str:
    """HTML: the senses with both readings' similarities, the flag, both prompts and both answers."""
    sae_pick, ext_pick = int(r.sae.choice[0]), int(r.external.choice[0])
    rows = "".join(
        f'<tr style="{"background:#e8f0fe" if j in (sae_pick, ext_pick) else ""}"><td>{j + 1}</td>'
        f"<td>{html.escape(s.lexname)}</td><td>{html.escape(s.gloss)}</td>"
        f'<td style="text-align:right">{r.sae.scores[0][j]:.3f}{" ◀ model" if j == sae_pick else ""}</td>'
        f'<td style="text-align:right">{r.external.scores[0][j]:.3f}{" ◀ encoder" if j == ext_pick else ""}</td></tr>'
        for j, s in enumerate(r.item.senses))
    flag = ("<b style='color:#b00020'>flagged: the model seems to misread the word</b> (another supersense than "
            "the encoder's) — the policy annotates this prompt" if r.flagged else
            "<b>not flagged</b>: both readings agree on the supersense — the policy keeps the original prompt")

    def answer(p: np.ndarray) -> str:
        best = int(np.argmax(p))
        return ", ".join(f"<b>{html.escape(w)} {v:.2f}</b>" if i == best else f"{html.escape(w)} {v:.2f}"
                         for i, (w, v) in enumerate(zip(r.label_words, p)))

    pre = "white-space:pre-wrap;background:#f6f6f6;padding:4px;margin:2px 0"
    return (f'<div style="{_FONT}"><div>{flag}</div>'
            '<table cellpadding="3" style="font-size:12px;border-collapse:collapse">'
            f"<tr><th>#</th><th>supersense</th><th>gloss</th><th>SAE similarity</th><th>encoder similarity</th></tr>"
            f'{rows}</table><div style="margin-top:6px"><b>original prompt</b></div>'
            f'<div style="{pre}">{html.escape(r.prompt)}</div><div>answer: {answer(r.probs[0])}</div>'
            f'<div style="margin-top:6px"><b>reformulated prompt</b></div><div style="{pre}">'
            f"{html.escape(r.reformulated)}</div><div>answer: {answer(r.probs[1])}</div></div>")


class ReformulationExplorer:
    """A sentence box, a word box, a read button, the shared status line and a result area. `read()` is the
    button's callback and can be called directly; `last` holds the last `SentenceReading`."""

    def __init__(self, model, sae, *, encoder=None, offset: torch.Tensor | None = None,
                 fmt: rf.PromptFormat = rf.TOPIC_FORMAT, examples: Sequence[tuple[str, str]] = (),
                 max_senses: int = 6):
        import ipywidgets as w

        self.model, self.sae, self.encoder, self.offset, self.fmt = model, sae, encoder, offset, fmt
        self.max_senses, self.last = max_senses, None
        first = examples[0] if examples else ("China has many camps for political prisoners", "camps")
        self.sentence = w.Textarea(value=first[0], description="sentence", layout=w.Layout(width="640px"),
                                   placeholder="a sentence with a noun, e.g. 'we sat on the bank of the river'")
        self.word = w.Text(value=first[1], description="word", placeholder="the noun to read, e.g. bank",
                           layout=w.Layout(width="320px"))
        self.button = w.Button(description="read", button_style="primary",
                               tooltip="read the word, flag a misreading, reformulate")
        self.status_bar = StatusBar()
        self.status = self.status_bar.message
        self.result = w.HTML(value="")
        self.result.add_class("saelab-reformulation-result")
        self.widget = w.VBox([self.sentence, w.HBox([self.word, self.button]), self.status_bar.widget, self.result])
        self.button.on_click(lambda _: self.read())
        self.read()

    def read(self, sentence: str | None = None, word: str | None = None) -> SentenceReading | None:
        """Explain the sentence and word in the boxes (or the arguments); a message instead on bad input."""
        if sentence is not None:
            self.sentence.value = sentence
        if word is not None:
            self.word.value = word
        ok, reading = self.status_bar.run(
            explain_sentence, self.model, self.sae, self.sentence.value, self.word.value, encoder=self.encoder,
            offset=self.offset, fmt=self.fmt, max_senses=self.max_senses,
            busy=f"reading {self.word.value.strip()!r} and running both prompts…")
        if not ok:
            self.result.value = ""
            return None
        self.last = reading
        self.result.value = render_reading(reading)
        before, after = (reading.label_words[int(np.argmax(p))] for p in reading.probs)
        self.status_bar.info(f"{reading.item.word!r} ({reading.item.lemma}): "
                             f"{'flagged' if reading.flagged else 'not flagged'}; answer {before} -> {after} "
                             "after reformulation")
        return reading

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def reformulation_explorer(model, sae, *, encoder=None, offset: torch.Tensor | None = None,
                           fmt: rf.PromptFormat = rf.TOPIC_FORMAT, examples: Sequence[tuple[str, str]] = (),
                           max_senses: int = 6) -> ReformulationExplorer:
    """An interactive explorer of notebook 07's pipeline on one sentence (see the module docstring)."""
    return ReformulationExplorer(model, sae, encoder=encoder, offset=offset, fmt=fmt, examples=examples,
                                 max_senses=max_senses)


__all__ = ["ReformulationExplorer", "SentenceReading", "explain_sentence", "inventory_lemma",
           "reformulation_explorer", "render_reading"]
