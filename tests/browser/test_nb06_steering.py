"""Notebook 06 in the browser: it runs, and its steering playground shows steered beside unsteered text."""

from __future__ import annotations

import re

import pytest

DONE = r"^latent (\d+), alpha {}: \d+ steered tokens"


@pytest.mark.widget("steering_playground")
def test_steering_playground(lab):
    nb = lab.run_notebook("06_steering_feature_selection.ipynb")
    w = nb.widget("steering_playground(", name="steering_playground")
    exercise(w)


def exercise(w):
    """What a learner does with the widget, and what the page must show after each step."""
    result = w.root.locator(".saelab-steering-result")

    w.expect_message(re.compile(DONE.format("2")), what="the notebook's first generation")
    latent = int(re.match(DONE.format("2"), w.message().inner_text()).group(1))
    w.expect(result, "unsteered", what="both continuations shown")
    w.shot(f"latent {latent} alpha 2")

    w.type("alpha", "8")
    w.type("prompt", "My favourite food is", enter=False)
    w.drag_slider(w.slider("new tokens"), 0.1)
    n_new = int(w.slider_value(w.slider("new tokens")))
    w.click("Generate")
    w.expect_message(re.compile(DONE.format("8")), what=f"alpha 8, a new prompt, {n_new} new tokens")
    steered = int(re.search(r"(\d+) steered tokens", w.message().inner_text()).group(1))
    assert 0 < steered <= n_new, f"{steered} steered tokens for a limit of {n_new}"
    w.expect(result, f"steered (latent {latent}, alpha 8)", what="the steered side")
    w.expect(result, "My favourite food is", what="the new prompt on both sides")
    w.shot("alpha 8 new prompt")

    w.type("alpha", "strong")
    w.click("Generate")
    w.expect_message("alpha must be a number", error=True, what="alpha not a number")
    w.shot("alpha not a number")

    w.type("alpha", "4")
    w.type("latent", "99999999")
    w.click("Generate")
    w.expect_message("does not exist", error=True, what="latent out of range")

    w.type("latent", str(latent))
    w.type("prompt", "", enter=False)
    w.click("Generate")
    w.expect_message("The prompt is empty", error=True, what="empty prompt")
    w.shot("empty prompt")
