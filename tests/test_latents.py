"""saelab.latents: the records against brute force, their contexts as text, the logit lens.

The `relu_sae` and `records` fixtures live in conftest.py (tests/test_viz.py draws dashboards from the same records).
"""

from __future__ import annotations

import math

import pytest
import torch

from saelab.activations import extract
from saelab.latents import latent_logits, latent_records, logit_lens

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def brute(tiny, relu_sae, records):
    acts = extract(tiny, records.texts, relu_sae.cfg.hook_name, pooling="none", progress=False)
    with torch.no_grad():
        z = relu_sae.encode(acts.tensor)
    return acts, z


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


def test_entries_leave_out_the_unused_slots(records):
    for latent in records.latents.tolist():
        firing = int(records.fire_count[records.position(latent)])
        acts, rows, windows = records.top_entries(latent)
        assert len(acts) == len(rows) == len(windows) == min(5, firing)
        assert (rows >= 0).all() and (acts > 0).all() and torch.equal(acts, acts.sort(descending=True).values)
        acts, rows, windows = records.sample_entries(latent)
        assert len(acts) == len(rows) == len(windows) == min(6, firing)


def test_records_from_precomputed_activations_and_a_subset_of_latents(tiny, relu_sae, records, brute):
    acts, _ = brute
    subset = latent_records(tiny, relu_sae, activations=acts, latents=[7, 3], top_n=5, n_samples=6,
                            window=(3, 2), batch_texts=4, progress=False)
    assert subset.latents.tolist() == [3, 7]
    torch.testing.assert_close(subset.top_acts[1], records.top_acts[7])
    assert subset.stats(7)["fire_count"] == records.stats(7)["fire_count"]
    with pytest.raises(ValueError, match="not recorded"):
        subset.position(5)
    with pytest.raises(ValueError, match="does not exist"):
        subset.position(48)


def test_contexts_as_text_are_the_characters_around_the_token(records):
    # the tiny model's tokenizer has one token per byte and the texts are ASCII: a window of tokens is a slice
    left, right = records.window
    busiest = int(records.fire_count.argmax())
    rows = records.top_entries(busiest)[1].tolist()
    expected = []
    for row in rows:
        t = records.text_of_row(row)
        at = row - int(records.text_offsets[t])
        expected.append(records.texts[t][max(0, at - left):at + right + 1])
        assert records.window_text(row, (0, 0)) == records.texts[t][at]
    assert [records.window_text(row) for row in rows] == expected
    assert records.top_context_texts(busiest, 3) == expected[:3]
    assert records.top_context_texts(busiest) == expected  # fewer than asked: the latent's top-5 table
    never = [j for j in records.latents.tolist() if records.fire_count[records.position(j)] == 0]
    assert all(records.top_context_texts(j) == [] for j in never)


def test_random_contexts_are_seeded_windows_of_the_texts(records):
    drawn = records.random_context_texts(12, seed=3)
    assert drawn == records.random_context_texts(12, seed=3) != records.random_context_texts(12, seed=4)
    assert len(drawn) == 12 and all(any(text in whole for whole in records.texts) for text in drawn)


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
