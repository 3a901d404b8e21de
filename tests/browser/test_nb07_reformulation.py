"""Notebook 07 in the browser: it runs, and its reformulation explorer reads a typed sentence: both readings, the
flag, the reformulated prompt and both answers."""

from __future__ import annotations

import re

import pytest

DONE = r"^'{word}' \({lemma}\): (flagged|not flagged); answer (\w+) -> (\w+) after reformulation$"
ANY = re.compile(DONE.format(word=r"[\w ]+", lemma=r"\w+"))


@pytest.mark.widget("reformulation_explorer")
def test_reformulation_explorer(lab):
    nb = lab.run_notebook("07_prompt_reformulation.ipynb")
    w = nb.widget("reformulation_explorer(", name="reformulation_explorer")
    exercise(w)


def exercise(w):
    """What a learner does with the widget, and what the page must show after each step."""
    result = w.root.locator(".saelab-reformulation-result")

    w.expect_message(ANY, what="the notebook's first sentence")
    w.expect(result, "reformulated prompt", what="both prompts shown")
    w.expect(result, "encoder similarity", what="both readings over the senses")
    w.shot("first sentence")

    w.type("sentence", "The court ruled against the company yesterday.", enter=False)
    w.type("word", "court", enter=False)
    w.click("read")
    w.expect_message(re.compile(DONE.format(word="court", lemma="court")), what="a typed sentence")
    w.expect(result, "The court (", what="the gloss right after the word")
    w.expect(result, "SAE similarity", what="the model's reading")
    w.shot("typed sentence court")

    w.type("sentence", "Two lines were painted on the road.", enter=False)
    w.type("word", "lines", enter=False)
    w.click("read")
    w.expect_message(re.compile(DONE.format(word="lines", lemma="line")), what="a plural: lemma found")
    w.shot("plural lines")

    w.type("word", "zebra", enter=False)
    w.click("read")
    w.expect_message("not a whole word of the sentence", error=True, what="a word missing from the sentence")
    w.expect(result, "", exact=True, what="no stale result after an error")

    w.type("sentence", "The zebra ran away.", enter=False)
    w.click("read")
    w.expect_message("is not a noun of the sense inventory", error=True, what="a word the inventory lacks")
    w.shot("word not in the inventory")

    w.type("sentence", "", enter=False)
    w.click("read")
    w.expect_message("The sentence is empty", error=True, what="an empty sentence")
