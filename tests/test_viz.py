"""saelab.viz and saelab.widgets: dashboard data against brute force, the logit lens, the browser's messages."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from saelab.activations import extract
from saelab.sae import SAE, SAEConfig
from saelab.viz import latent_dashboard, latent_logits, latent_records, logit_lens, quantile_bands

HOOK = "blocks.1.hook_resid_post"
TEXTS = [
    "The cat sat on the mat.", "Dogs bark at night!", "a", "Sparse autoencoders find features.",
    "Hello, world: hello again.", "Numbers 12345 and 678.", "The end is near, the end.", "Why? Because.",
    "Trees grow slowly in the north.",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def relu_sae():
    # A random ReLU SAE with a negative bias: latents fire on some tokens only, as trained ones do.
    sae = SAE(SAEConfig(d_in=64, d_sae=48, architecture="relu", hook_name=HOOK), seed=0)
    with torch.no_grad():
        sae.W_enc.mul_(0.5)
        sae.b_enc.fill_(-0.5)
    return sae


@pytest.fixture(scope="module")
def brute(tiny, relu_sae):
    acts = extract(tiny, TEXTS, HOOK, pooling="none", progress=False)
    with torch.no_grad():
        z = relu_sae.encode(acts.tensor)
    return acts, z


@pytest.fixture(scope="module")
def records(tiny, relu_sae):
    # several batches of texts, so the running merge is exercised
    return latent_records(tiny, relu_sae, TEXTS, n_top=5, n_samples=6, window=(3, 2), batch_texts=2, progress=False)


def test_running_top_k_equals_brute_force(records, brute):
    acts, z = brute
    assert records.n_tokens == len(z)
    assert torch.equal(records.token_ids, acts.token_ids)
    assert torch.equal(records.fire_count, (z > 0).sum(0))
    torch.testing.assert_close(records.max_act, z.max(0).values)
    assert torch.equal(records.hist_counts.sum(1), records.fire_count)  # every firing token is in the histogram
    values = z.topk(5, dim=0).values
    for j in range(z.shape[1]):
        firing = int((z[:, j] > 0).sum())
        m = min(5, firing)
        torch.testing.assert_close(records.top_acts[j, :m], values[:m, j])
        # the rows hold those values (identical contexts, e.g. "The" opening two texts, tie exactly)
        torch.testing.assert_close(z[records.top_rows[j, :m], j], values[:m, j])
        assert len(set(records.top_rows[j, :m].tolist())) == m
        assert (records.top_rows[j, m:] == -1).all() and (records.top_acts[j, m:] == 0).all()


def test_windows_hold_the_latents_activations_around_each_token(records, brute):
    acts, z = brute
    offsets = acts.offsets.tolist()
    left = records.window[0]
    for j in range(0, z.shape[1], 7):
        for row, window in zip(records.top_rows[j].tolist(), records.top_windows[j]):
            if row == -1:
                continue
            text = records.text_of_row(row)
            for k, value in enumerate(window.tolist()):
                r = row - left + k
                if offsets[text] <= r < offsets[text + 1]:
                    assert value == pytest.approx(float(z[r, j]))
                else:
                    assert math.isnan(value)  # outside the text: no token


def test_samples_are_firing_tokens_and_cover_rare_latents(records, brute):
    _, z = brute
    for j in range(z.shape[1]):
        rows = [r for r in records.sample_rows[j].tolist() if r != -1]
        assert len(set(rows)) == len(rows)
        assert all(float(z[r, j]) > 0 for r in rows)
        firing = int((z[:, j] > 0).sum())
        assert len(rows) == min(6, firing)
        for act, r in zip(records.sample_acts[j].tolist(), records.sample_rows[j].tolist()):
            if r != -1:
                assert act == pytest.approx(float(z[r, j]))
    busiest = int(records.fire_count.argmax())
    bands = quantile_bands(records, busiest, n_bands=3)
    assert [b["low"] <= b["high"] for b in bands] == [True] * len(bands)
    assert all(a["high"] <= b["low"] for a, b in itertools.pairwise(bands))


def test_records_from_precomputed_activations_and_a_subset_of_latents(tiny, relu_sae, records, brute):
    acts, _ = brute
    subset = latent_records(tiny, relu_sae, activations=acts, latents=[7, 3], n_top=5, n_samples=6,
                            window=(3, 2), batch_texts=4, progress=False)
    assert subset.latents.tolist() == [3, 7]
    torch.testing.assert_close(subset.top_acts[1], records.top_acts[7])
    assert subset.stats(7)["fire_count"] == records.stats(7)["fire_count"]
    with pytest.raises(ValueError, match="not recorded"):
        subset.position(5)
    with pytest.raises(ValueError, match="does not exist"):
        subset.position(48)


def test_logit_lens_matches_the_final_norm_and_unembedding_by_hand(tiny, relu_sae):
    hf = tiny.original_model
    norm, head = hf.model.norm, hf.get_output_embeddings()
    latents = [0, 5, 11]
    d = relu_sae.W_dec[latents].detach()
    # Gemma's RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + weight); then the (bias-free) unembedding
    h = d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight.detach())
    expected = h @ head.weight.detach().T
    torch.testing.assert_close(latent_logits(tiny, relu_sae, latents), expected, rtol=1e-5, atol=1e-5)
    lens = logit_lens(tiny, relu_sae, 5, k=4)
    top_ids = expected[1].topk(4).indices.tolist()
    assert [t for t, _ in lens["top"]] == [tiny.tokenizer.decode([i]) for i in top_ids]
    assert [v for _, v in lens["bottom"]] == sorted(v for _, v in lens["bottom"])


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
