"""Notebook 02 in the browser: it runs (training SAEs in smoke mode), and its latent browser answers a learner."""

from __future__ import annotations

import re

import pytest

SHOWN = re.compile(r"^latent (\d+): [\d,]+ firing tokens")


@pytest.mark.widget("latent_browser")
def test_latent_browser(lab):
    nb = lab.run_notebook("02_training_saes.ipynb")
    w = nb.widget("latent_browser(", name="latent_browser")
    dashboard = w.root.locator(".widget-output")

    w.expect_message(SHOWN, what="the first latent's dashboard")
    first = int(SHOWN.match(w.message().inner_text()).group(1))
    w.expect(dashboard, f"Latent {first}", what="dashboard heading")
    w.shot(f"latent {first}")

    w.type("latent", "3")
    w.expect_message(re.compile(r"^latent 3: "), what="latent typed")
    w.expect(dashboard, "Latent 3", what="dashboard of the typed latent")
    w.shot("latent 3 typed")

    w.click("▶")
    w.expect_message(re.compile(r"^latent 4: "), what="next button")
    assert w.control("latent").input_value() == "4"

    w.drag_slider(w.slider(index=0), 0.5)
    dragged = int(w.slider_value(w.slider(index=0)))
    w.expect_message(re.compile(rf"^latent {dragged}: "), what=f"slider dragged to {dragged}")
    assert w.control("latent").input_value() == str(dragged), "the number box did not follow the slider"
    w.shot(f"slider at {dragged}")

    w.type("latent", "999999")
    w.expect_message("Latent 999999 does not exist", error=True, what="latent out of range")
    w.shot("latent out of range")

    # search by a token one latent is known to fire on (from the first dashboard's top tokens)
    w.type("latent", str(first))
    w.expect_message(re.compile(rf"^latent {first}: .*top tokens '"), what="back to the first latent")
    token = re.search(r"top tokens '([^']*)'", w.message().inner_text()).group(1).strip() or "the"
    w.type(None, token, placeholder="search top tokens")
    w.expect_message(re.compile(rf"latent\(s\) have '{re.escape(token)}' among their top tokens"),
                     what=f"search {token!r}")
    assert w.control("matches").locator("option").count() >= 1
    w.shot(f"search {token}")

    w.type(None, "qqzzxxj", placeholder="search top tokens")
    w.expect_message("No latent has 'qqzzxxj' among its top tokens", error=True, what="search without a match")
    w.shot("search without a match")
