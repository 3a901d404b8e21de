"""Notebook 01 in the browser: it runs, and its pooling explorer answers a learner's clicks and typing."""

from __future__ import annotations

import re

import pytest


@pytest.mark.widget("pooling_explorer")
def test_pooling_explorer(lab):
    nb = lab.run_notebook("01_extracting_activations.ipynb")
    w = nb.widget("pooling_explorer(", name="pooling_explorer")
    summary = w.root.locator(".saelab-pooling-explorer .widget-output")

    w.expect_message(re.compile(r"\d+ tokens at blocks\.\d+\.hook_resid_post\. Largest share — mean: .*last: "),
                     what="first summary")
    assert summary.locator(".saelab-pooling-row").count() == 4  # mean, max, sum, last
    w.shot("opened")

    w.type("text", "Paris is the capital of France and its largest city.")
    w.expect(summary, "capital of France", what="a typed text")
    w.expect_message(re.compile(r"^\d+ tokens at "), what="a typed text")
    w.shot("typed text")

    w.tick("include BOS")
    w.expect_message(re.compile(r"mean: '<bos>'"), what="BOS takes the largest share of the mean")
    w.shot("include BOS")

    w.drag_slider(w.slider("layer"), 0.15)
    layer = int(w.slider_value(w.slider("layer")))
    w.expect_message(f"at blocks.{layer}.hook_resid_post", what=f"layer dragged to {layer}")
    w.shot(f"layer {layer}")

    w.choose("hook", "mlp_out")
    w.expect_message(f"at blocks.{layer}.hook_mlp_out", what="hook mlp_out")
    w.shot("mlp_out")

    for pooling in ("mean", "max", "sum", "last"):
        w.tick(pooling, on=False)
    w.expect_message("Tick at least one pooling", error=True, what="no pooling ticked")
    w.shot("no pooling ticked")
    w.tick("max")
    w.expect_message(re.compile(r"Largest share — max: [^;]*$"), what="max pooling alone")
    assert summary.locator(".saelab-pooling-row").count() == 1

    w.type("text", "")
    w.expect_message("The text is empty", error=True, what="empty text")
    w.shot("empty text")

    w.choose("example", index=1)
    w.expect_message(re.compile(r"^\d+ tokens at "), what="an example picked")
    assert w.control("text").input_value().strip(), "picking an example did not fill the text box"
