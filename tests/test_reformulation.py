"""Notebook 07's prompt reformulation (saelab.reformulation, saelab.reformulation_eval) on the tiny model: the
prompts and read positions, the prototype reading, the disagreement flags, the trigger policies, the control draws
and the verdicts."""

import html

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar

from saelab import reformulation as rf
from saelab import reformulation_eval as reval
from saelab.sae import SAE, SAEConfig
from saelab.tasks import Sense, load_task, sense_inventory, topic_targets

HOOK = "blocks.0.hook_resid_post"
# the tiny model's tokens are bytes: label words need distinct first bytes, and no leading space
FMT = rf.PromptFormat(rf.TOPIC_FORMAT.template, ("o", "m", "p", "e", "t"), prefix="")


class FakeEncoder:
    """A sentence encoder stand-in: bag-of-letters vectors (texts sharing words are similar)."""

    def encode(self, texts, **_):
        out = np.zeros((len(texts), 26))
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def senses(*lexnames):
    return tuple(Sense(f"w.n.{j + 1:02d}", lex, f"gloss {j}", (f"example {j} with w",))
                 for j, lex in enumerate(lexnames))


def item(text="a w here", lexnames=("noun.artifact", "noun.person", "noun.person"), gold=0, label=0):
    start = text.index("w")
    ss = senses(*lexnames)
    return rf.SenseItem(text, "w", (start, start + 1), "w", "noun", ss, ss[gold].synset, ss[gold].gloss, label)


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig(d_in=64, d_sae=96, architecture="topk", k=8, hook_name=HOOK), seed=0)


@pytest.fixture(scope="module")
def topic(tiny):
    items, names = rf.topic_items(n=10, seed=0, max_senses=3)
    return items, names


# --- data, annotation and prompts ---------------------------------------------------------------------------------


def test_topic_items_carry_their_target_and_senses():
    items, names = rf.topic_items(n=25, seed=0)
    assert names == ["noun.artifact", "noun.communication", "noun.location", "noun.person", "noun.time"]
    assert len(items) == 25 and sorted(set(it.label for it in items)) == list(range(5))
    targets, inventory = topic_targets(), sense_inventory()
    for it in items:
        assert it.text[slice(*it.span)] == it.word and targets[it.text]["lemma"] == it.lemma
        assert len({s.lexname for s in it.senses}) >= 2  # ambiguous: the reading can change the label
        assert it.senses == inventory[(it.lemma, "noun")][:8]
        assert it.gold_gloss and (it.gold < 0 or it.senses[it.gold].synset == it.synset)


def test_annotate_inserts_the_note_after_the_word():
    assert rf.annotate("many camps for them", (5, 10), " a penal colony ") == "many camps (a penal colony) for them"
    with pytest.raises(ValueError, match="span"):
        rf.annotate("short", (3, 9), "x")


def test_find_form_matches_regular_inflections_only_as_whole_words():
    assert rf.find_form("The Parties met", "party") == (4, 11)
    assert rf.find_form("two political prisoners", "political_prisoner") == (4, 23)
    assert rf.find_form("the firemen came", "fireman") == (4, 11)
    assert rf.find_form("a well-known bank", "well") is None


def test_render_points_at_the_template_copy_and_chat_needs_a_template(tiny):
    prompt, (a, b) = rf.item_prompt(tiny, item(), "note", FMT)
    assert prompt.startswith("Sentence: a w (note) here\n") and prompt[a:b] == "w" and a > prompt.index("\n")
    tweet, (a, b) = rf.item_prompt(tiny, item(), None, rf.TWEET_FORMAT)  # no {target_word}: the word in place
    assert tweet[a:b] == "w" and tweet.startswith("Tweet: a w here")
    with pytest.raises(ValueError, match="chat template"):
        rf.render(tiny, "a w", "w", rf.TOPIC_CHAT_FORMAT)


def test_chat_prompts_keep_the_read_span(tiny):
    tok = tiny.tokenizer
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        prompt, (a, b) = rf.item_prompt(tiny, item("the w is here"), "note", rf.TOPIC_CHAT_FORMAT)
    finally:
        tok.chat_template = None
    assert prompt.startswith("<user>Sentence: the w (note) is here") and prompt.endswith("<assistant>")
    assert prompt[a:b] == "w" and prompt[a - 1] == '"'  # the question's copy; BOS left to the tokenizer


def test_read_prompts_reads_the_word_and_the_label_logits(tiny):
    prompt, span = rf.item_prompt(tiny, item(), None, FMT)
    other = rf.item_prompt(tiny, item("the w is there"), None, FMT)
    run = rf.read_prompts(tiny, [(prompt, span), other, (prompt, span)], HOOK, fmt=FMT, progress=False)
    ids = tiny.tokenizer(prompt, return_offsets_mapping=True)
    pos = max(i for i, (x, y) in enumerate(ids["offset_mapping"]) if x < span[1] and y > span[0])
    with torch.no_grad():
        logits, cache = tiny.run_with_cache(torch.tensor([ids["input_ids"]]), names_filter=[HOOK])
    label_ids = [tiny.tokenizer.encode(w, add_special_tokens=False)[0] for w in FMT.label_words]
    assert torch.allclose(run.acts[0], cache[HOOK][0, pos], atol=1e-4)
    assert torch.allclose(run.logits[0], logits[0, -1, label_ids], atol=1e-3)
    assert torch.equal(run.acts[0], run.acts[2]) and torch.equal(run.logits[0], run.logits[2])  # run once, twice out
    assert run.acts.shape == (3, 64) and run.logits.shape == (3, 5)


def test_calibration_removes_the_label_prior():
    logits = torch.tensor([[2.0, 0.0], [3.0, 2.5], [1.0, 0.2]])
    assert (rf.predict(logits) == 0).all()
    offset = rf.calibration_offset(logits)
    assert torch.allclose(offset, logits.log_softmax(-1).mean(0))
    assert rf.predict(logits, offset).tolist() == [0, 1, 1]  # margins 2, 0.5, 0.8 against a mean of 1.1


# --- the prototype reading ----------------------------------------------------------------------------------------


def fake_protos(items, rows):
    """Prototypes with given (sense, text, vector) contexts for the lemma "w"."""
    return rf.Prototypes([("w", "noun")] * len(rows), [r[0] for r in rows], ["example"] * len(rows),
                         [r[1] for r in rows], torch.tensor([r[2] for r in rows], dtype=torch.float32))


def test_nearest_sense_picks_the_closest_prototype_and_leaves_the_item_out():
    items = [item("a w here"), item("the w there")]
    protos = fake_protos(items, [(0, "x", [1.0, 0.0]), (0, "the w there", [0.0, 1.0]), (1, "y", [0.0, 1.0]),
                                 (2, "z", [-1.0, 0.1])])
    vecs = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    reading = rf.nearest_sense(vecs, protos.acts, items, protos)
    assert reading.choice.tolist() == [0, 1]
    # item 1's own sentence is a context of sense 0: left out, so sense 0 is [1, 0] alone for it
    assert reading.scores[1][0] == pytest.approx(float(torch.nn.functional.normalize(vecs[1], dim=0)[0]))
    assert reading.margin[0] > 0
    lonely = fake_protos(items, [(0, "a w here", [1.0, 0.0]), (1, "y", [0.0, 1.0])])
    assert rf.nearest_sense(vecs[:1], lonely.acts, items[:1], lonely).scores[0][0] == -np.inf
    with pytest.raises(ValueError, match="item vectors"):
        rf.nearest_sense(vecs[:1], protos.acts, items, protos)


def test_centering_removes_a_shared_direction():
    items = [item()]
    shared = [10.0, 0.0, 0.0]
    protos = fake_protos(items, [(0, "x", [10.0, 1.0, 0.0]), (1, "y", [10.0, 0.0, 1.0])])
    vec = torch.tensor([[10.0, 0.0, 1.0]])
    assert rf.nearest_sense(vec, protos.acts, items, protos, center=True).choice[0] == 1
    assert shared  # uncentred, both cosines are dominated by the shared first dimension
    raw = rf.nearest_sense(vec, protos.acts, items, protos).scores[0]
    assert abs(raw[0] - raw[1]) < 0.02


def test_prototypes_on_the_tiny_model(tiny, topic, sae):
    items, _ = topic
    contexts = rf.prototype_contexts(items, max_examples=1)
    lemmas = {(it.lemma, it.pos) for it in items}
    assert {c[0] for c in contexts} == lemmas
    assert sum(c[2] == "gloss" for c in contexts) == sum(len(it.senses) for it in {i.lemma: i for i in items}.values())
    for *_, text, word, span in contexts:
        assert text[span[0]:span[1]] == word
    protos = rf.prototypes(tiny, items, HOOK, fmt=FMT, max_examples=1, progress=False)
    assert protos.acts.shape == (len(contexts), 64) and protos.encoded(sae).shape == (len(contexts), 96)
    run = rf.read_prompts(tiny, [rf.item_prompt(tiny, it, None, FMT) for it in items], HOOK, fmt=FMT, progress=False)
    reading = rf.nearest_sense(sae.encode(run.acts).detach(), protos.encoded(sae), items, protos)
    assert len(reading.choice) == len(items) and all(0 <= c < len(it.senses) for c, it in zip(reading.choice, items))


def test_disagreement_by_supersense_or_by_sense():
    it = item(lexnames=("noun.artifact", "noun.person", "noun.artifact"))
    ext = rf.Reading(np.array([0]), [np.array([0.9, 0.1, 0.2])])
    same_lex = rf.Reading(np.array([2]), [np.array([0.1, 0.2, 0.5])])  # another sense, same supersense
    other_lex = rf.Reading(np.array([1]), [np.array([0.3, 0.7, 0.1])])
    assert rf.disagreement(same_lex, ext, [it], "lexname")[0] == 0
    assert rf.disagreement(same_lex, ext, [it], "sense")[0] == pytest.approx(0.4)
    assert rf.disagreement(other_lex, ext, [it], "lexname")[0] == pytest.approx(0.4)  # 0.7 - max(0.3, 0.1)
    with pytest.raises(ValueError, match="level"):
        rf.disagreement(ext, ext, [it], "word")


def test_external_reading_uses_gloss_and_examples_but_not_the_item():
    ss = (Sense("s1", "noun.artifact", "zzz qqq", ("a w here",)), Sense("s2", "noun.person", "aaa hhh eee", ()))
    it = rf.SenseItem("a w here", "w", (2, 3), "w", "noun", ss, "s1", "zzz qqq", 0)
    reading = rf.external_reading([it], FakeEncoder())
    assert reading.choice[0] == 1  # s1's example is the item itself: left out, so only "zzz qqq" describes s1


# --- controls and policies ----------------------------------------------------------------------------------------


def test_wrong_sense_draws_another_sense_from_another_supersense():
    items = [item(lexnames=("noun.artifact", "noun.artifact", "noun.person", "noun.time"))] * 200
    chosen = np.zeros(200, int)
    drawn = rf.wrong_sense(items, chosen, seed=3)
    assert set(drawn) == {2, 3}  # never the chosen sense, never its supersense when another exists
    assert np.array_equal(drawn, rf.wrong_sense(items, chosen, seed=3))
    assert not np.array_equal(drawn, rf.wrong_sense(items, chosen, seed=4))
    same = [item(lexnames=("noun.person", "noun.person"))]
    assert rf.wrong_sense(same, np.array([1]))[0] == 0


def test_filler_matches_the_note_in_tokens(tiny):
    note = "a penal institution where prisoners are held"
    fill = rf.filler(tiny, note)
    count = lambda s: len(tiny.tokenizer.encode(" (" + s + ")", add_special_tokens=False))  # noqa: E731
    assert count(fill) >= count(note) and count(" ".join(fill.split()[:-1])) < count(note)
    assert set(fill.split()) <= set(rf.FILLER_WORDS)


def make_study(n=40, seed=0):
    """A study of fake items whose variants' predictions are set directly (no model)."""
    rng = np.random.default_rng(seed)
    items = [item(label=int(y)) for y in rng.integers(0, 2, n)]
    y = np.array([it.label for it in items])

    def logits_for(correct):
        pred = np.where(correct, y, 1 - y)
        return torch.tensor(np.eye(2)[pred] * 4.0, dtype=torch.float32)

    c0 = rng.random(n) < 0.7
    logits = {"none": logits_for(c0), "external": logits_for(c0 | (rng.random(n) < 0.5)),
              "gold": logits_for(np.ones(n, bool))}
    flag = np.zeros(n, bool)
    flag[: n // 4] = True
    for v in ("wrong", "filler"):
        lg = logits_for(rng.random(n) < 0.5)
        lg[~flag] = float("nan")
        logits[v] = lg
    readings = {k: rf.Reading(np.zeros(n, int), [np.zeros(3)] * n, k) for k in ("sae", "raw", "external")}
    scores = {"sae": flag * 0.3, "raw": (rng.random(n) < 0.3) * 0.2}
    return reval.Study("fake", ["a", "b"], items, logits, torch.zeros(2), readings, scores, {}, torch.zeros(n, 4),
                       torch.zeros(n, 8))


def test_policies_combine_per_item_outcomes():
    study = make_study()
    pol = reval.policies(study)
    none, ext = study.pred("none"), study.pred("external")
    sae = pol["SAE trigger"]
    assert np.array_equal(sae.outcome(study), np.where(study.flags("sae"), ext, none))
    assert np.array_equal(pol["no annotation"].outcome(study), none)
    assert np.array_equal(pol["annotate every item"].outcome(study), ext)
    assert (pol["oracle: gold gloss, every item"].outcome(study) == study.labels).all()
    ent = pol["entropy trigger (same rate)"].trigger
    assert ent.sum() == study.flags("sae").sum()
    assert np.array_equal(pol["SAE trigger, wrong-sense gloss"].trigger, study.flags("sae"))
    bad = reval.Policy("wrong everywhere", np.ones(len(study.items), bool), "wrong")
    with pytest.raises(ValueError, match="did not score"):
        bad.outcome(study)


def test_entropy_trigger_takes_the_least_confident_items():
    study = make_study()
    study.logits["none"][:5] = torch.tensor([0.0, 0.0])  # five coin flips: the highest entropy
    mask = reval.top_k_mask(study.entropy(), 5)
    assert mask[:5].all() and mask.sum() == 5
    assert reval.top_k_mask(np.array([1.0, 1.0, 0.0]), 1).tolist() == [True, False, False]  # ties: first


def test_random_triggering_draws_and_expectation():
    study = make_study(n=80)
    rate = 0.25
    rand = reval.random_triggering(study, rate, n_draws=4000, seed=1)
    c0, c1 = study.correct("none"), study.correct("external")
    assert np.allclose(rand["expected"], 0.75 * c0 + 0.25 * c1)
    assert rand["accuracies"].mean() == pytest.approx(rand["expected"].mean(), abs=0.005)
    assert len(np.unique(rand["accuracies"])) > 3  # the draws differ
    again = reval.random_triggering(study, rate, n_draws=4000, seed=1)["accuracies"]
    assert np.array_equal(rand["accuracies"], again)


def test_mcnemar_is_the_exact_test():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0, 1, 1], bool)
    b = np.array([0, 0, 1, 0, 1, 0, 1, 0, 0, 1], bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    assert reval.mcnemar_p(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert reval.mcnemar_p(a, b) == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert reval.mcnemar_p(a, a) == 1.0


def test_policy_table_and_claims():
    study = make_study(n=120)
    table = reval.policy_table(study, n_boot=200, n_draws=200)
    assert len(table) == 9 and table.loc["no annotation", "Δ vs none"] == 0
    assert (table["low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["high"]).all()
    row = table.loc["SAE trigger"]
    c0, cs = study.correct("none"), reval.policies(study)["SAE trigger"].outcome(study) == study.labels
    assert row["accuracy"] == pytest.approx(cs.mean())
    assert row["repaired"] - row["damaged"] == int(cs.sum() - c0.sum())
    verdicts = reval.claims(study, n_boot=200)
    assert [v.claim[:3] for v in verdicts] == ["R1:", "R2a", "R2b", "R2c"]
    assert all(v.outcome in ("held", "contradicted", "inconclusive") for v in verdicts)
    assert all(v.correction.startswith("Holm") for v in verdicts)
    study.scores["sae"][:] = 0  # nothing flagged: not testable
    assert {v.outcome for v in reval.claims(study, n_boot=100)} == {"not testable"}


def test_build_study_on_the_tiny_model(tiny, topic, sae):
    items, names = topic
    run0 = rf.read_prompts(tiny, [rf.item_prompt(tiny, it, None, FMT) for it in items], HOOK, fmt=FMT,
                           progress=False)
    protos = rf.prototypes(tiny, items, HOOK, fmt=FMT, max_examples=1, progress=False)
    ext = rf.external_reading(items, FakeEncoder())
    study = reval.build_study(tiny, sae, items, names, run0, protos, ext, fmt=FMT, progress=False)
    flag = study.flags("sae")
    assert study.logits["external"].shape == (len(items), 5) and not torch.isnan(study.logits["gold"]).any()
    assert (torch.isnan(study.logits["wrong"]).any(-1).numpy() == ~flag).all()  # wrong gloss on flagged items only
    assert study.notes["gold"] == [it.gold_gloss for it in items]
    assert len(reval.policy_table(study, n_boot=50, n_draws=20)) == 9
    assert set(reval.detector_table(study).index) == {"SAE codes", "raw activations", "entropy (confidence)"}
    assert [v.claim[:3] for v in reval.side_claims(study, sae, n_boot=50)] == ["S1:", "S2:", "S3:"]
    s1, s1b = reval.side_claims(study, sae, corpus_variance=2.0, n_boot=50)[:2]
    with torch.no_grad():
        err = ((sae(study.acts) - study.acts) ** 2).sum(-1)
    across_items = ((study.acts - study.acts.mean(0)) ** 2).sum(-1).sum()
    assert s1.estimate.value == pytest.approx(float(err.sum() / across_items), rel=1e-5)
    assert s1b.claim.startswith("S1b") and s1b.estimate.value == pytest.approx(float(err.mean()) / 2.0, rel=1e-5)


def test_wic_and_tweet_items():
    pair = next(p for p in load_task("wordnet-wic").test if p.label == 0)
    first, second = rf.wic_items([pair])
    assert (first.text, second.text, first.synset) == (pair.context_1, pair.context_2, pair.synset_1)
    assert first.word.lower() == second.word.lower() == pair.word and first.gold_gloss == pair.gloss_1
    prompt, (a, b) = rf.wic_prompt(first, second, ("x", None))
    assert f"{first.word} (x)" in prompt and prompt[a:b] == pair.word and prompt[a - 1] == '"'
    with pytest.raises(ValueError, match="not in the sense inventory"):
        rf.inventory_items([{"text": "a zzyzx", "word": "zzyzx", "span": (2, 7), "lemma": "zzyzx", "pos": "noun"}])
    tweets = rf.tweet_items(["what a day at work", "zzz qqq"], [2, 0])
    assert len(tweets) == 1 and tweets[0].word in ("day", "work") and tweets[0].label == 2


# --- the explorer widget (logic; the browser test drives it in JupyterLab) -----------------------------------------


def test_explorer_reads_a_sentence_and_reports_bad_input(tiny, sae):
    from saelab.widgets._common import WidgetInputError
    from saelab.widgets.reformulation import explain_sentence, inventory_lemma, reformulation_explorer

    assert inventory_lemma("Lines") == "line" and inventory_lemma("court") == "court"
    with pytest.raises(WidgetInputError, match="not a noun of the sense inventory"):
        inventory_lemma("zebra")
    reading = explain_sentence(tiny, sae, "The court ruled today", "court", encoder=FakeEncoder(), fmt=FMT,
                               max_senses=3)
    assert reading.reformulated.startswith("Sentence: The court (")
    assert reading.prompt.startswith("Sentence: The court ruled")
    assert all(abs(p.sum() - 1) < 1e-5 for p in reading.probs) and len(reading.sae.scores[0]) == 3
    assert reading.flagged == bool(rf.disagreement(reading.sae, reading.external, [reading.item])[0] > 0)
    explorer = reformulation_explorer(tiny, sae, encoder=FakeEncoder(), fmt=FMT, max_senses=3,
                                      examples=[("The court ruled today", "court")])
    status = lambda: html.unescape(explorer.status.value)  # noqa: E731
    assert explorer.last is not None and "'court' (court): " in status()
    assert "reformulated prompt" in explorer.result.value
    assert explorer.read(word="zebra") is None and "not a whole word" in status()
    assert explorer.result.value == ""
    assert explorer.read(sentence="  ") is None and "The sentence is empty" in status()
    assert explorer.read(sentence="The camp was divided", word="camp") is not None
