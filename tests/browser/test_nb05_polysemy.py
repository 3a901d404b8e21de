"""Notebook 05 in the browser: it runs, and its WiC explorer shows two contexts' top latents for a pair."""

from __future__ import annotations

import re

import pytest

VERDICT = re.compile(r"'(\w[\w' -]*)': (the same top-1 latent|different top-1 latents) \(\d+ vs \d+\), "
                     r"\d+ shared in the top (\d+)")


@pytest.mark.widget("polysemy_explorer")
def test_polysemy_explorer(lab):
    nb = lab.run_notebook("05_polysemy.ipynb")
    w = nb.widget("polysemy_explorer(", name="polysemy_explorer")
    exercise(w)


def exercise(w):
    """What a learner does with the widget, and what the page must show after each step."""
    # the message line of saelab's StatusBar
    status = w.message()

    w.expect(status, VERDICT, what="the first pair")
    w.shot("first pair")

    w.choose("WiC pair", index=3)
    word = w.control("word").input_value().strip()
    w.expect(status, f"'{word}': ", what="another pair picked")
    w.shot(f"pair {word}")

    w.type("context 1", "We sat on the bank of the river and watched the boats.", enter=False)
    w.type("context 2", "The bank raised its interest rates again this year.", enter=False)
    w.type("word", "bank", enter=False)
    w.drag_slider(w.slider("top k"), 0.25)
    k = int(w.slider_value(w.slider("top k")))
    w.click("compare")
    w.expect(status, re.compile(rf"'bank': .* shared in the top {k}$"), what=f"typed pair, top {k}")
    w.expect(w.root, "bank", what="the result names the word")
    w.shot("typed pair bank")

    w.type("word", "zebra", enter=False)
    w.click("compare")
    w.expect(status, "zebra", what="a word absent from the contexts")
    assert not VERDICT.search(status.inner_text()), "a verdict was shown for a word that is in neither context"
    w.shot("word not in the contexts")

    w.type("context 1", "", enter=False)
    w.click("compare")
    w.expect(status, "is empty", what="an empty context")
