"""saelab.polysemy and saelab.polysemy_eval (PS-Eval): the confusion matrix and metrics against scikit-learn and
hand counts, the skip rules, the positions read, and the whole pipeline on the tiny model against a brute-force
extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from saelab import polysemy as ps
from saelab import polysemy_eval as pse
from saelab.activations import extract
from saelab.sae import SAE, SAEConfig
from saelab.tasks import WiCPair

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.1.hook_resid_post"

# Hand-built case: 8 pairs. label 1 & same: pairs 0, 2, 7 (TP = 3); label 1 & different: pair 1 (FN = 1);
# label 0 & same: pair 3 (FP = 1); label 0 & different: pairs 4, 5, 6 (TN = 3).
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 1])
SAME = np.array([True, False, True, True, False, False, False, True])


def test_confusion_matrix_by_hand_and_sklearn():
    cm = ps.confusion(LABELS, SAME)
    assert cm == {"tp": 3, "fn": 1, "fp": 1, "tn": 3}
    tn, fp, fn, tp = skm.confusion_matrix(LABELS, SAME.astype(int), labels=[0, 1]).ravel()
    assert (cm["tp"], cm["fn"], cm["fp"], cm["tn"]) == (tp, fn, fp, tn)


def test_metrics_match_sklearn():
    m = ps.metrics_from_confusion(ps.confusion(LABELS, SAME))
    pred = SAME.astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(LABELS, pred)) == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(skm.precision_score(LABELS, pred)) == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(skm.recall_score(LABELS, pred)) == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(skm.f1_score(LABELS, pred))
    # specificity is the recall of the negative class
    assert m["specificity"] == pytest.approx(skm.recall_score(LABELS, pred, pos_label=0)) == pytest.approx(3 / 4)


def test_metrics_undefined_are_nan_not_zero():
    m = ps.metrics_from_confusion(ps.confusion([1, 0, 1], [False, False, False]))  # nothing predicted "same"
    assert math.isnan(m["precision"]) and m["f1"] == 0  # f1 = 2TP / (2TP + FP + FN) = 0 / 2 is defined
    assert m["recall"] == 0 and m["specificity"] == 1
    m = ps.metrics_from_confusion(ps.confusion([0, 0], [True, False]))
    assert math.isnan(m["recall"]) and m["specificity"] == 0.5


@pytest.mark.parametrize("labels, same, match", [
    ([], [], "No pairs"),
    ([1, 0], [True], "equal length"),
    ([1, 2], [True, False], "0 .different senses. or 1"),
])
def test_confusion_rejects_bad_input(labels, same, match):
    with pytest.raises(ValueError, match=match):
        ps.confusion(labels, same)


def _codes_for(top: list[tuple[int, int]], d: int = 6) -> torch.Tensor:
    """Codes whose top latent in each context is the given one (-1: all zeros, no latent active)."""
    codes = torch.zeros(len(top), 2, d)
    for i, pair in enumerate(top):
        for c, latent in enumerate(pair):
            if latent >= 0:
                codes[i, c, latent] = 2.0
                codes[i, c, (latent + 1) % d] = 1.0  # a runner-up, shared or not
    return codes


def test_evaluate_codes_top1_rule_and_variants():
    top = [(0, 0), (1, 2), (3, 3), (4, 4), (0, 5), (2, 1), (-1, -1), (5, 5)]
    codes = _codes_for(top)
    result = pse.evaluate_codes(codes, LABELS, k=2, pos=list("nnvvnnvv"))
    # pair 6 has no active latent in either context: counted, and never called "same"
    assert result.n_no_active == 2
    assert result.same.tolist() == [True, False, True, True, False, False, False, True]
    assert result.confusion == {"tp": 3, "fn": 1, "fp": 1, "tn": 3}
    # Jaccard@2 by hand: (0,0) -> {0,1} vs {0,1} = 1; (1,2) -> {1,2} vs {2,3} = 1/3; (0,5) -> {0,1} vs {5,0} = 1/3
    assert result.jaccard[[0, 1, 4, 6]].tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 0.0])
    flat = codes.reshape(len(codes), 2, -1)
    expected_cos = torch.nn.functional.cosine_similarity(flat[:, 0], flat[:, 1], dim=-1).nan_to_num(0.0)
    np.testing.assert_allclose(result.cosine, expected_cos.numpy(), atol=1e-7)
    curve = result.roc("cosine")
    assert curve.auroc == pytest.approx(skm.roc_auc_score(LABELS, result.cosine))
    assert result.by_pos()["n"]["n"] == 4
    assert result.by_pos()["n"]["tp"] + result.by_pos()["v"]["tp"] == 3
    jd = result.jaccard_decision(0.5)
    assert jd["tp"] + jd["fn"] == 4 and jd["fp"] + jd["tn"] == 4


def test_bootstrap_and_paired_difference():
    codes = _codes_for([(0, 0), (1, 2), (3, 3), (4, 4), (0, 5), (2, 1), (1, 3), (5, 5)])
    a = pse.evaluate_codes(codes, LABELS)
    low, high = pse.bootstrap_ci(a, "specificity", n_boot=500)
    assert low <= a.metrics["specificity"] <= high
    same = pse.paired_difference(a, a, n_boot=200)
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}
    other = pse.evaluate_codes(codes[:4], LABELS[:4])
    with pytest.raises(ValueError, match="different pairs"):
        pse.paired_difference(a, other)
    est = pse.metric_estimate(a, "specificity", n_boot=500)
    assert (est.low, est.high) == (low, high) and est.value == pytest.approx(a.metrics["specificity"])
    assert pse.metric_difference(a, a, "recall", n_boot=100).high == 0.0
    with pytest.raises(ValueError, match="metric must be"):
        pse.bootstrap_ci(a, "auc")


def test_render_prompt_finds_the_template_copy_even_for_the_word_means():
    text, context_start, word_start = ps.render_prompt(ps.TEMPLATE, "the end means a lot {x}", "means")
    assert text == "the end means a lot {x} The means means"
    assert text[word_start:word_start + 5] == "means" and text[word_start - 4:word_start] == "The "
    assert context_start == 0
    with pytest.raises(ValueError, match="exactly one"):
        ps.render_prompt("{context} means", "a", "b")


def _pair(word, c1, c2, label=1, **kw):
    return WiCPair(word=word, pos=kw.pop("pos", "noun"), context_1=c1, context_2=c2, label=label, **kw)


def test_prepare_pairs_counts_every_skip(tiny):
    pairs = [
        _pair("a", "a cat sat", "it is a dog", 1),
        _pair("x", "no target here", "x marks it", 0),              # absent from context 1
        _pair("cat", "the cat sat", "a cat ran", 1),                 # several tokens for a byte-level tokenizer
        _pair("I", "I ran home", "so I did", 0),
        _pair("  ", "a", "b", 0),                                     # empty word
    ]
    probe = ps.prepare_pairs(pairs, tiny.tokenizer)
    assert len(probe) == 2 and probe.pair_index == [0, 3] and probe.n_input == 5
    assert probe.skip_counts() == {"target absent from context 1": 1, "multi-token target": 1,
                                   "empty target word": 1}
    assert sorted(s.index for s in probe.skipped) == [1, 2, 4]
    assert probe.summary()["n_skipped"] == 3
    # the read positions hold the word: the context copy (first occurrence) and the template copy
    ids = tiny.tokenizer(probe.prompts, add_special_tokens=True)["input_ids"]
    for _prompt, token_ids, (ctx, tmpl), word in zip(probe.prompts, ids, probe.positions, ["a", "a", "I", "I"]):
        assert tiny.tokenizer.decode([token_ids[tmpl]]) == word
        assert tiny.tokenizer.decode([token_ids[ctx]]) == word
        assert tmpl == len(token_ids) - 7  # "<bos> ... The {w} means": w sits 6 tokens before the end
    # reading the last token of a multi-token target instead of skipping it
    kept = ps.prepare_pairs(pairs, tiny.tokenizer, multi_token="last")
    assert kept.pair_index == [0, 2, 3]
    with pytest.raises(ValueError, match="empty"):
        ps.prepare_pairs([], tiny.tokenizer)
    with pytest.raises(ValueError, match="label"):
        ps.prepare_pairs([_pair("a", "a b", "b a", label=3)], tiny.tokenizer)


def test_a_given_span_wins_over_searching(tiny):
    # hub WiC gives the lemma as the word and marks the inflected form with a span
    pair = _pair("a", "b a a", "a b", 1, span_1=(4, 5), span_2=(0, 1))
    probe = ps.prepare_pairs([pair], tiny.tokenizer)
    ids = tiny.tokenizer(probe.prompts[0])["input_ids"]
    offsets = tiny.tokenizer(probe.prompts[0], return_offsets_mapping=True)["offset_mapping"]
    assert offsets[probe.positions[0][0]] == (4, 5)
    assert tiny.tokenizer.decode([ids[probe.positions[0][0]]]) == "a"


@pytest.fixture(scope="module")
def relu_sae():
    sae = SAE(SAEConfig(d_in=64, d_sae=40, architecture="relu", hook_name=HOOK), seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
    return sae


PAIRS = [
    _pair("a", "a cat sat on the mat", "she has a dog", 1, pos="noun"),
    _pair("a", "it was a bad day", "what a day", 0, pos="noun"),
    _pair("I", "I ran home", "so I did it", 1, pos="verb"),
    _pair("I", "I think so", "then I left", 0, pos="verb"),
    _pair("o", "o say can you see", "big o notation", 0, pos="adj"),
    _pair("x", "x marks the spot", "the x axis", 1, pos="adj"),
]


@pytest.mark.parametrize("template", [ps.TEMPLATE, "{target_word}: {context}"])
def test_pipeline_reads_the_right_rows(tiny, relu_sae, template):
    probe = ps.prepare_pairs(PAIRS, tiny.tokenizer, template=template)
    acts = ps.extract_probe(tiny, probe, HOOK, cache=False, progress=False)
    full = extract(tiny, probe.prompts, HOOK, pooling="none", progress=False)  # every token, BOS left out
    for read, which in (("context", 0), ("template", 1)):
        x = acts.pair_acts(HOOK, read)
        for i in range(len(probe)):
            for c in range(2):
                position = probe.positions[2 * i + c][which]
                torch.testing.assert_close(x[i, c], full.text_rows(2 * i + c)[position - 1])
    result = pse.evaluate_sae(relu_sae, acts, "template")
    codes = relu_sae.encode(acts.pair_acts(HOOK, "template"))
    top = codes.argmax(-1)
    active = codes.max(-1).values > 0
    expected_same = ((top[:, 0] == top[:, 1]) & active.all(1)).numpy()
    assert result.same.tolist() == expected_same.tolist()
    assert result.confusion == ps.confusion(probe.labels, expected_same)
    assert set(result.core) == {"mse", "l0", "explained_variance"}
    assert set(result.diagnostics) == {"same_sense", "different_sense"}
    raw = pse.evaluate_raw(acts, HOOK, "template")
    raw_top = acts.pair_acts(HOOK, "template").argmax(-1)
    assert raw.same.tolist() == (raw_top[:, 0] == raw_top[:, 1]).tolist()


def test_ps_eval_one_call_and_random_baseline(tiny, relu_sae):
    result = pse.ps_eval(tiny, relu_sae, PAIRS + [_pair("dog", "a dog", "the dog", 1)], progress=False)
    assert len(result) == 6 and result.skipped == {"multi-token target": 1} and result.n_input == 7
    trained = SAE(SAEConfig(d_in=64, d_sae=40, architecture="jumprelu", hook_name=HOOK), seed=3)
    with torch.no_grad():
        trained.b_dec.normal_()
    random = pse.random_sae_like(trained, seed=1)
    assert random.W_enc.shape == trained.W_enc.shape and random.cfg.architecture == "jumprelu"
    assert not torch.equal(random.W_enc, trained.W_enc)
    assert torch.equal(random.b_dec, trained.b_dec)  # centred like the trained SAE
    assert torch.equal(pse.random_sae_like(trained, seed=1, keep_b_dec=False).b_dec, torch.zeros(64))


def test_winner_cosines_by_hand():
    sae = SAE(SAEConfig(d_in=2, d_sae=3, architecture="relu"), seed=0)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
        sae.W_enc.copy_(sae.W_dec.T)
    top1 = np.array([[0, 2], [1, 1], [0, 1]])
    out = pse.winner_cosines(sae, top1, np.array([1, 1, 0]))
    assert out["same_sense"]["share_same_winner"] == 0.5
    assert out["same_sense"]["decoder_cosine"] == pytest.approx(0.6)
    assert out["different_sense"]["encoder_cosine"] == pytest.approx(0.0)


def test_explain_pair_and_its_errors(tiny, relu_sae):
    e = pse.explain_pair(tiny, relu_sae, "a cat sat", "she has a dog", "a", k=4)
    assert e.target_token == "a" and len(e.top[0]) <= 4
    assert e.same == (e.top1[0] == e.top1[1] and e.top1[0] >= 0)
    with pytest.raises(ValueError, match="does not occur as a whole word in context 2"):
        pse.explain_pair(tiny, relu_sae, "a cat", "the dog", "a")
    with pytest.raises(ValueError, match="tokens for this model"):
        pse.explain_pair(tiny, relu_sae, "a cat", "the cat", "cat")
    with pytest.raises(ValueError, match="word is empty"):
        pse.explain_pair(tiny, relu_sae, "a cat", "the cat", " ")


def test_explorer_widget_messages(tiny, relu_sae):
    pytest.importorskip("ipywidgets")
    from saelab.widgets.polysemy import PolysemyExplorer

    explorer = PolysemyExplorer(tiny, relu_sae, pairs=PAIRS, k=3)
    assert explorer.last is not None and "context 1" in explorer.result.value  # the first pair is shown at once
    assert "WiC label" in explorer.result.value
    assert explorer.compare("the cat sat", "a cat ran", "cat") is None
    assert "tokens for this model" in explorer.status.value and explorer.result.value == ""
    assert "saelab-error" in explorer.status._dom_classes and not explorer.status_bar.busy_now
    assert explorer.picker.value == -1  # typed input is a custom pair
    shown = explorer.compare("I ran", "so I did", "I")
    assert shown is not None and "top-1" in explorer.status.value and "WiC label" not in explorer.result.value
    assert "saelab-error" not in explorer.status._dom_classes
    explorer.select(1)
    assert explorer.word.value == "a" and "different senses" in explorer.result.value
