"""Notebook 04 in the browser: it runs, and its binarization explorer answers a learner (threshold -> macro-F1)."""

from __future__ import annotations

import re

import pytest

SCORED = r"^threshold {} · {} · macro-F1 "


@pytest.mark.widget("binarization_explorer")
def test_binarization_explorer(lab):
    nb = lab.run_notebook("04_binarized_sae_features.ipynb")
    w = nb.widget("binarization_explorer(", name="binarization_explorer")
    exercise(w)


def exercise(w):
    """What a learner does with the widget, and what the page must show after each step."""
    table = w.root.locator(".saelab-binarization-explorer .widget-output")

    w.expect_message(re.compile(SCORED.format(r"[\d.]+", "logistic regression")), what="first score")
    w.shot("opened")

    w.type("or type", "2")
    w.expect_message(re.compile(SCORED.format("2", "logistic regression")), what="threshold typed")
    assert table.locator('.saelab-threshold-row[data-threshold="2"]').count() == 1
    w.shot("threshold 2 typed")

    w.drag_slider(w.slider("threshold"), 0.1)
    dragged = w.slider_value(w.slider("threshold"))
    # the slider's readout rounds (3.7 for a value of 3.75): the message gives the value in full
    at_drag = re.escape(f"{dragged:g}") + r"\d*"
    w.expect_message(re.compile(SCORED.format(at_drag, "logistic regression")), what=f"slider dragged to {dragged:g}")
    w.shot(f"slider at {dragged:g}")

    w.choose("classifier", "decision tree")
    w.expect_message(re.compile(SCORED.format(at_drag, "decision tree")), what="decision tree")
    w.shot("decision tree")

    w.choose("features", index=1)
    w.expect_message(re.compile(SCORED.format(r"[\d.]+", "decision tree")), what="another feature set")

    w.type("or type", "-5")
    w.expect_message("out of range", error=True, what="a negative threshold")
    w.shot("negative threshold")
