"""saelab.viz and saelab.widgets: quantile bands, the dashboard's HTML, the browser's messages.

The `relu_sae` and `records` fixtures live in conftest.py; tests/test_latents.py checks the records themselves.
"""

from __future__ import annotations

import itertools

import pytest

from saelab.viz import latent_dashboard, quantile_bands

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quantile_bands_split_the_samples_by_activation(records):
    busiest = int(records.fire_count.argmax())
    bands = quantile_bands(records, busiest, n_bands=3)
    assert [b["low"] <= b["high"] for b in bands] == [True] * len(bands)
    assert all(a["high"] <= b["low"] for a, b in itertools.pairwise(bands))
    assert sum(len(b["entries"]) for b in bands) == len(records.sample_entries(busiest)[0])


def test_dashboard_html_shows_contexts_and_logit_lens(tiny, relu_sae, records):
    latent = int(records.fire_count.argmax())
    html = latent_dashboard(records, latent, model=tiny, sae=relu_sae)._repr_html_()
    assert f"Latent {latent}" in html and "Top activations" in html and "promotes" in html
    assert "data:image/png;base64" in html  # the histogram travels inside the HTML
    token = records.top_tokens(latent, 1)[0][0]
    assert any(hit[0] == latent for hit in records.search(token))


def test_browser_shows_messages_not_tracebacks(tiny, relu_sae, records):
    pytest.importorskip("ipywidgets")
    from saelab.widgets import latent_browser

    browser = latent_browser(records, model=tiny, sae=relu_sae)
    assert browser.last_dashboard is not None  # opens on the first latent that fires
    assert browser.show(10**6) is False
    assert "does not exist" in browser.status.value and "0 to 47" in browser.status.value
    assert browser.show("seven") is False and "not a latent number" in browser.status.value
    assert browser.show(-1) is False and "does not exist" in browser.status.value
    assert browser.search("qqqqqq") == [] and "No latent" in browser.status.value
    assert browser.show(" 3 ") is True and browser.number.value == 3 and browser.last_dashboard.latent == 3
    token = records.top_tokens(int(records.fire_count.argmax()), 1)[0][0]
    hits = browser.search(token)
    assert hits and browser.last_dashboard.latent == hits[0][0]
