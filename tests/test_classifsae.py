"""ClassifSAE (saelab.classifier, saelab.classifsae, saelab.concepts): the spliced classifier, the losses, training
through saelab's trainer, the baselines' interface, and the bad inputs that must fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import FastICA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from saelab import classifsae_eval as cse
from saelab import concept_metrics, stats
from saelab.classifier import (
    PromptedClassifier,
    build_prompts,
    check_class_counts,
    label_words,
    sentence_vectors,
)
from saelab.classifsae import (
    ClassifSAE,
    ClassifSAEConfig,
    ClassifSAELoss,
    activation_rate_loss,
    anchor_train_config,
    ghost_grad_loss,
    normalized_reconstruction_loss,
    train_classifsae,
)
from saelab.concepts import (
    SAEConcepts,
    Settings,
    classifsae_concepts,
    describe_concepts,
    evaluate_explainer,
    fit_ica,
    pick_latents_l1,
    train_conceptshap,
    train_hi_concept,
)
from saelab.report import claims_rows
from saelab.sae import SAE, SAEConfig
from saelab.train_data import Batch

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["negative", "neutral", "positive"]


def bridge_logits(model, hidden):
    """Reference path: the whole TransformerLens bridge, run on a one-token input whose residual stream entering the
    last block is replaced by `hidden` with a hook; its logits are what the classifier's features must produce."""
    last = model.cfg.n_layers - 1
    tokens = torch.full((len(hidden), 1), 5, dtype=torch.long)
    hooks = [(f"blocks.{last}.hook_resid_pre", lambda act, hook: hidden[:, None, :].to(act.dtype))]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[:, 0]


def toy_classifier(tiny, n=120, seed=0):
    """A fitted linear read-out on random hidden vectors whose class is the argmax of three fixed projections."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, tiny.cfg.d_model, generator=g) * 3
    clf = PromptedClassifier(tiny, LABELS)
    feats = clf.feature_matrix(hidden)
    labels = (feats[:, :3]).argmax(-1).numpy()
    clf.fit(hidden, labels, C=1.0)
    return clf, hidden, labels


# ---- the classifier --------------------------------------------------------------------------------------------


def test_prompts_list_the_label_options():
    prompts = build_prompts(["so happy"], LABELS, "Is it {options}?\n{text}\nAnswer:")
    assert prompts == ["Is it negative, neutral or positive?\nso happy\nAnswer:"]
    assert label_words(["noun.food", "noun.time"]) == ["food", "time"]
    with pytest.raises(ValueError, match="text"):
        build_prompts(["x"], LABELS, "no placeholder")


def test_classifier_features_equal_the_spliced_model_run(tiny):
    hidden = torch.randn(4, tiny.cfg.d_model) * 5
    clf = PromptedClassifier(tiny, ["apple", "berry", "cherry"], readout="label_tokens")  # distinct first bytes
    reference = bridge_logits(tiny, hidden)
    with torch.no_grad():
        torch.testing.assert_close(tiny.original_model.lm_head(clf.features(hidden)), reference, atol=1e-4, rtol=1e-4)
    # label-token read-out = the model's own logits at the label words' first tokens
    torch.testing.assert_close(clf.logits_from_hidden(hidden), reference[:, clf.label_token_ids], atol=1e-4,
                               rtol=1e-4)


def test_linear_readout_matches_sklearn(tiny):
    clf, hidden, labels = toy_classifier(tiny)
    feats = clf.feature_matrix(hidden).double().numpy()
    scaler = StandardScaler().fit(feats)
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(feats), labels)
    expected = reference.predict_proba(scaler.transform(feats))
    np.testing.assert_allclose(clf.proba_from_hidden(hidden).numpy(), expected, atol=1e-4)
    assert clf.accuracy(hidden, labels) == pytest.approx((reference.predict(scaler.transform(feats)) == labels).mean())


def test_sentence_vectors_are_the_last_prompt_token_at_the_last_block(tiny):
    texts = ["good day", "bad"]
    vecs = sentence_vectors(tiny, texts, LABELS, [2, 0], template="{options}: {text}", with_outputs=True,
                            cache=False, progress=False)
    prompt = build_prompts(texts[:1], LABELS, "{options}: {text}")
    tokens = tiny.tokenizer(prompt, return_tensors="pt").input_ids
    _, cache = tiny.run_with_cache(tokens, names_filter=[vecs.hook_name, "blocks.1.hook_resid_post"])
    torch.testing.assert_close(vecs.vectors[0], cache[vecs.hook_name][0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vecs.outputs[0], cache["blocks.1.hook_resid_post"][0, -1], atol=1e-4, rtol=1e-4)
    assert vecs.hook_name == "blocks.1.hook_resid_pre" and vecs.labels.tolist() == [2, 0]


def test_classifier_bad_inputs(tiny):
    clf = PromptedClassifier(tiny, LABELS)
    with pytest.raises(RuntimeError, match="not fitted"):
        clf.predict_from_hidden(torch.zeros(2, tiny.cfg.d_model))
    with pytest.raises(ValueError, match="does not match the classifier's head"):
        clf.check_labels(["positive", "negative"])
    with pytest.raises(ValueError, match="d_model=64"):
        clf.features(torch.zeros(3, 65))
    hidden = torch.randn(14, tiny.cfg.d_model)
    few = np.array([0] * 6 + [1] * 6 + [2] * 2)
    with pytest.raises(ValueError, match="too few sentences per class.*'positive': 2"):
        clf.fit(hidden, few)
    with pytest.raises(ValueError, match="class ids in 0..2"):
        clf.fit(hidden, np.arange(14) % 4)
    with pytest.raises(ValueError, match="too few sentences per class in the test split"):
        check_class_counts(np.array([0, 1]), LABELS, 1, "test")


# ---- ClassifSAE's losses ---------------------------------------------------------------------------------------


def test_normalized_reconstruction_loss_by_hand():
    x = torch.tensor([[0.0, 0.0], [4.0, 0.0]])  # batch mean (2, 0): both items at distance 2
    x_hat = torch.tensor([[1.0, 0.0], [4.0, 2.0]])  # squared errors 1 and 4
    assert float(normalized_reconstruction_loss(x, x_hat)) == pytest.approx((1 / 2 + 4 / 2) / 2, rel=1e-5)


def test_activation_rate_loss_by_hand():
    # B = 10, tau = 0.2: each latent's 2 largest activations in the batch are free
    z = torch.zeros(10, 2)
    z[:4, 0] = torch.tensor([5.0, 4.0, 3.0, 1.0])  # penalised: 3 + 1
    z[:1, 1] = 7.0  # fires once: free
    assert float(activation_rate_loss(z, 0.2)) == pytest.approx((3 + 1) / 10)
    assert float(activation_rate_loss(z, 1.0)) == 0.0


def test_z_class_is_detached_from_the_reconstruction_in_the_second_half():
    torch.manual_seed(0)
    cfg = ClassifSAEConfig(n_classes=2, n_concepts=3, k=4)
    sae = SAE(cfg.sae_config(8), seed=0)
    head = torch.nn.Linear(3, 2)
    loss = ClassifSAELoss(cfg, head, n_steps=10)
    x = torch.randn(32, 8)
    batch = Batch(x, {"label": torch.randint(0, 2, (32,))})
    with torch.no_grad():  # make every class latent fire so its encoder column would get reconstruction gradient
        sae.b_enc[:3] = 10.0
    grads = {}
    for step in (0, 9):
        sae.zero_grad()
        terms = loss(sae, batch, sae.forward_train(x), step)
        assert set(terms) == {"mse", "activation_rate", "classifier"}
        terms["mse"].backward()
        grads[step] = sae.W_enc.grad[:, :3].abs().sum().item()
    assert grads[0] > 0 and grads[9] == 0.0
    assert not loss.detached(4) and loss.detached(5)


def toy_task(n=600, d=16, seed=0):
    """Vectors whose class (3 classes) is set by which of three directions they lean on."""
    g = torch.Generator().manual_seed(seed)
    directions = F.normalize(torch.randn(3, d, generator=g), dim=1)
    labels = torch.randint(0, 3, (n,), generator=g)
    x = 3 * directions[labels] + 0.5 * torch.randn(n, d, generator=g) + 2.0
    return x, labels


def test_train_classifsae_through_the_shared_trainer():
    x, labels = toy_task()
    cfg = ClassifSAEConfig(n_classes=3, n_concepts=6, k=4)
    model = train_classifsae(x, labels, cfg, anchor_train_config(300, batch_size=64, lr=1e-2, min_lr=1e-4),
                             progress=False)
    log = model.sae.training_log
    assert {"mse", "activation_rate", "classifier"} <= set(log[-1])  # the hook's terms, with "mse" replaced
    assert log[-1]["classifier"] < log[0]["classifier"]
    accuracy = float((model.head_predict(x) == labels).float().mean())
    assert accuracy > 0.9, accuracy
    assert model.sae.cfg.d_sae == 32 and model.concepts(x).shape == (600, 6)
    assert model.sae.cfg.metadata["training"]["aux_k_coefficient"] == 0.0  # AuxK off: ghost grads instead
    assert model.sae.cfg.metadata["classifsae_dead_latents"]["ghost_grads"] is True


def test_classifsae_save_load_round_trip(tmp_path):
    x, labels = toy_task(200)
    model = train_classifsae(x, labels, ClassifSAEConfig(n_classes=3, n_concepts=4, k=4),
                             anchor_train_config(5, batch_size=64), progress=False)
    loaded = ClassifSAE.load(model.save(tmp_path / "csae"))
    torch.testing.assert_close(loaded.concepts(x), model.concepts(x))
    torch.testing.assert_close(loaded.head.weight, model.head.weight)
    assert loaded.cfg == model.cfg


def test_classifsae_bad_inputs(tiny):
    x, labels = toy_task(100)
    cfg = ClassifSAEConfig(n_classes=3, n_concepts=4, k=4)
    with pytest.raises(ValueError, match="do not match a head for 3 classes"):
        train_classifsae(x, labels + 1, cfg, anchor_train_config(2, batch_size=64), progress=False)
    with pytest.raises(ValueError, match="too small for the activation-rate loss"):
        train_classifsae(x, labels, cfg, anchor_train_config(2, batch_size=8), progress=False)
    model = train_classifsae(x, labels, cfg, anchor_train_config(2, batch_size=64), progress=False)
    with pytest.raises(ValueError, match="d_in=16"):
        model.concepts(torch.zeros(3, 20))
    with pytest.raises(ValueError, match="d_in=16"):
        classifsae_concepts(model).concepts(torch.zeros(3, 20))
    two_class = PromptedClassifier(tiny, ["a", "b"])
    with pytest.raises(ValueError, match="label set does not match"):
        classifsae_concepts(model, two_class)
    with pytest.raises(ValueError, match="n_classes"):
        ClassifSAEConfig(n_classes=1)


# ---- causality metrics through the real (tiny) classifier --------------------------------------------------------


def test_racc_of_a_perfect_reconstruction_is_one(tiny):
    clf, hidden, _ = toy_classifier(tiny)
    assert concept_metrics.recovery_accuracy(clf.predict_from_hidden, hidden, hidden.clone()) == 1.0
    # and a reconstruction that is only the mean vector keeps fewer predictions
    mean_only = hidden.mean(0, keepdim=True).expand_as(hidden)
    assert concept_metrics.recovery_accuracy(clf.predict_from_hidden, hidden, mean_only) < 1.0


def test_ablating_a_latent_that_never_fires_flips_nothing(tiny):
    clf, hidden, _ = toy_classifier(tiny)
    sae = SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=32, architecture="topk", k=4), seed=0)
    with torch.no_grad():  # latent 5 can never win: zero encoder column and a very negative bias
        sae.W_enc[:, 5] = 0
        sae.b_enc[5] = -1e4
        sae.b_dec.copy_(hidden.mean(0))
    explainer = SAEConcepts(sae, range(8), "toy")
    a = explainer.concepts(hidden)
    assert (a[:, 5] == 0).all() and (a[:, :5] != 0).any()
    effect = concept_metrics.ablation_effect(clf.proba_from_hidden, explainer.decode, a, hidden, concept=5)
    assert not effect["flipped"].any() and float(effect["tvd"].max()) == 0.0
    causal = concept_metrics.conditional_causality(clf.proba_from_hidden, explainer.decode, a, hidden)
    assert causal["per_concept"][5] == {"concept": 5, "n_firing": 0, "flip_rate": None, "tvd": None}
    assert causal["n_firing_concepts"] == int((a != 0).any(0).sum())


# ---- baselines -------------------------------------------------------------------------------------------------


def test_ica_concepts_match_scikit_learn():
    x, _ = toy_task(300)
    explainer = fit_ica(x, n_concepts=5, seed=0)
    reference = FastICA(n_components=5, whiten="unit-variance", random_state=0, max_iter=1000).fit(x.double().numpy())
    np.testing.assert_allclose(explainer.concepts(x).numpy(), reference.transform(x.double().numpy()), atol=1e-4)
    recon = reference.inverse_transform(reference.transform(x.double().numpy()))
    np.testing.assert_allclose(explainer.reconstruct(x).numpy(), recon, atol=1e-3)


def test_l1_picking_finds_the_informative_latents():
    g = np.random.default_rng(0)
    codes = np.abs(g.normal(size=(400, 30))) * (g.random((400, 30)) < 0.3)
    labels = (codes[:, 7] > codes[:, 3]).astype(int) + 2 * (codes[:, 11] > 1.0) * (codes[:, 7] <= codes[:, 3])
    picked = pick_latents_l1(torch.as_tensor(codes), labels, n_concepts=5)
    assert {3, 7, 11} <= set(picked) and len(picked) == 5
    with pytest.raises(ValueError, match="only 30 latents fire"):
        pick_latents_l1(torch.as_tensor(codes), labels, n_concepts=40)


def test_concept_nets_train_through_the_classifier(tiny):
    clf, hidden, labels = toy_classifier(tiny, n=96)
    shap = train_conceptshap(clf, hidden, labels, n_concepts=5, hidden_dim=16, n_epochs=4, batch_size=32,
                             progress=False)
    a = shap.concepts(hidden)
    assert a.shape == (96, 5) and (a >= 0).all() and (a.sum(-1) <= 1 + 1e-5).all()
    assert shap.decode(a).shape == hidden.shape
    hi = train_hi_concept(clf, hidden, labels, n_concepts=5, hidden_dim=16, n_epochs=4, batch_size=32,
                          progress=False)
    assert "flip" not in hi.training_log[0] and hi.training_log[-1]["flip"] <= 0  # flip loss in the second half
    with pytest.raises(ValueError, match="do not match the classifier's 3 classes"):
        train_conceptshap(clf, hidden, labels + 3, n_epochs=1, progress=False)


def test_training_through_the_classifier_leaves_the_callers_model_as_it_was(tiny):
    """The language model is frozen only while a concept net trains through it: no gradient reaches its weights,
    and the caller's requires_grad flags are back afterwards (a classifier no longer freezes the model for good)."""
    before = {name: p.requires_grad for name, p in tiny.named_parameters()}
    assert any(before.values())
    clf, hidden, labels = toy_classifier(tiny, n=64)
    assert {name: p.requires_grad for name, p in tiny.named_parameters()} == before
    train_conceptshap(clf, hidden, labels, n_concepts=3, hidden_dim=8, n_epochs=1, batch_size=32, progress=False)
    assert all(p.grad is None for p in tiny.parameters())
    assert {name: p.requires_grad for name, p in tiny.named_parameters()} == before


def test_evaluate_explainer_and_describe(tiny):
    clf, hidden, _ = toy_classifier(tiny, n=60)
    explainer = fit_ica(hidden, n_concepts=4)
    emb = F.normalize(torch.randn(60, 8), dim=1).numpy()
    result = evaluate_explainer(explainer, clf, hidden, emb)
    row = result["row"]
    assert row["method"] == "FastICA" and 0 <= row["racc"] <= 1 and row["activation_rate"] == pytest.approx(1.0)
    assert set(row) >= {"delta_f_cond", "tvd_cond", "concept_sim", "sentence_sim_1", "sentence_sim_4"}
    with pytest.raises(ValueError, match="d_in=64"):
        evaluate_explainer(explainer, clf, torch.zeros(60, 32), emb)
    texts = ["the cat sat", "a cat ran", "dogs bark loudly", "dogs and cats"] * 15
    described = describe_concepts(result["concepts"], texts, n_sentences=2, n_words=3)
    assert len(described) == 4 and all(len(d["top_sentences"]) == 2 for d in described)


@pytest.mark.slow
def test_gemma_classifier_splice_matches_the_model(gemma):
    """On the real model: the classifier's decision from h equals the model run with h spliced in by hooks."""
    texts = ["I love this so much", "worst day ever", "the bus is at noon", "great game tonight!"]
    vecs = sentence_vectors(gemma, texts, LABELS, [2, 0, 1, 2], cache=False, progress=False)
    assert vecs.hook_name == "blocks.17.hook_resid_pre" and vecs.vectors.shape == (4, 640)
    clf = PromptedClassifier(gemma, LABELS, readout="label_tokens")
    reference = bridge_logits(gemma, vecs.vectors)[:, clf.label_token_ids]
    torch.testing.assert_close(clf.logits_from_hidden(vecs.vectors), reference, atol=1e-3, rtol=1e-4)
    assert concept_metrics.recovery_accuracy(clf.predict_from_hidden, vecs.vectors, vecs.vectors) == 1.0


# ---- centred scaling and ghost grads ---------------------------------------------------------------------------


def test_centered_scaling_is_folded_back():
    x, labels = toy_task(300)
    x = x + torch.tensor([500.0] + [0.0] * 15)  # a massive constant dimension, as in Gemma's residual stream
    model = train_classifsae(x, labels, ClassifSAEConfig(n_classes=3, n_concepts=4, k=4),
                             anchor_train_config(30, batch_size=64, lr=1e-2, min_lr=1e-4), progress=False)
    scale = model.sae.cfg.metadata["activation_scaling_factor"]
    assert scale == pytest.approx(4.0 / float((x - x.mean(0)).norm(dim=1).mean()), rel=1e-5)  # sqrt(16) / centred
    assert model.sae.cfg.normalize_activations == "none"  # folded: the SAE reads raw vectors
    # the folded SAE on raw x equals the unfolded one on scaled x
    unfolded = SAE(model.sae.cfg, seed=0)
    unfolded.load_state_dict(model.sae.state_dict())
    with torch.no_grad():
        unfolded.W_enc.div_(scale)
        unfolded.W_dec.mul_(scale)
        unfolded.b_dec.mul_(scale)
    torch.testing.assert_close(unfolded.encode(x * scale), model.encode(x), atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="normalize_activations must be one of"):
        ClassifSAEConfig(n_classes=3, normalize_activations="raw")


def test_ghost_grads_reach_only_dead_latents_and_match_the_anchor_rule():
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, d_sae=12, architecture="topk", k=3), seed=0)
    x = torch.randn(16, 8)
    out = sae.forward_train(x)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[2, 5]] = True
    loss = ghost_grad_loss(x, out.x_hat, out.pre_acts, sae.W_dec, dead)
    # the anchor's formula, written out without the overflow guard
    residual = x - out.x_hat
    ghost = torch.exp(out.pre_acts[:, dead]) @ sae.W_dec[dead]
    ghost = ghost * (residual.norm(dim=-1) / (1e-6 + 2 * ghost.norm(dim=-1)))[:, None].detach()

    def dense(p, t):
        return (p - t).pow(2) / ((t - t.mean(0)).norm(dim=-1, keepdim=True) + 1e-6)

    ghost_error = dense(ghost, residual.detach())
    reference = ((dense(out.x_hat, x) / (ghost_error + 1e-6)).detach() * ghost_error).mean()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-4)
    sae.zero_grad()
    loss.backward()
    grad = sae.W_enc.grad.abs().sum(0)
    assert grad[dead].gt(0).all() and grad[~dead].eq(0).all()


def test_the_loss_adds_ghost_grads_once_a_latent_has_not_fired_for_the_window():
    cfg = ClassifSAEConfig(n_classes=2, n_concepts=3, k=2, dead_window=2)
    sae = SAE(cfg.sae_config(8), seed=0)
    with torch.no_grad():  # latent 7 can never be among the top k
        sae.b_enc[7] = -1e4
    loss = ClassifSAELoss(cfg, torch.nn.Linear(3, 2), n_steps=10)
    x = torch.randn(32, 8)
    batch = Batch(x, {"label": torch.randint(0, 2, (32,))})
    keys = [set(loss(sae, batch, sae.forward_train(x), step)) for step in range(4)]
    assert "ghost_grads" not in keys[0] and "ghost_grads" not in keys[1] and "ghost_grads" in keys[2]
    assert loss.dead_log[2] >= 1
    no_ghost = ClassifSAELoss(ClassifSAEConfig(n_classes=2, n_concepts=3, k=2, dead_window=2, ghost_grads=False),
                              torch.nn.Linear(3, 2), n_steps=10)
    assert all("ghost_grads" not in set(no_ghost(sae, batch, sae.forward_train(x), s)) for s in range(4))


# ---- the evaluation protocol (saelab.classifsae_eval) --------------------------------------------------------------


def test_causal_effects_and_the_random_direction_control(tiny):
    clf, hidden, _ = toy_classifier(tiny, n=40)
    sae = SAE(SAEConfig(d_in=tiny.cfg.d_model, d_sae=16, architecture="topk", k=4), seed=0)
    with torch.no_grad():
        sae.b_dec.copy_(hidden.mean(0))
        sae.W_dec[1] = 0.0  # concept 1 moves nothing: neither its ablation nor its control can flip
    out = cse.causal_effects(SAEConcepts(sae, range(6), "toy"), clf, hidden, seed=0)
    fires = out["fires"].astype(bool)
    assert np.isnan(out["flips"][~fires]).all() and not np.isnan(out["flips"][fires]).any()
    assert np.nan_to_num(out["flips"][:, 1]).sum() == 0 and np.nan_to_num(out["control"][:, 1]).sum() == 0
    assert out["consistent"].dtype == bool and out["consistent"].shape == (40,)


def test_sentence_estimate_is_a_bootstrap_over_the_chosen_sentences():
    values = np.array([np.nan, 1.0, 0.0, 1.0, 1.0, np.nan])
    rows = np.array([1, 2, 3, 4])
    e = cse.sentence_estimate(lambda w: cse._mean(values, w), 6, rows, n_boot=300)
    assert e.value == pytest.approx(0.75) and e.low <= 0.75 <= e.high and e.n == 4
    flips = np.array([[1.0, np.nan], [0.0, 0.0], [np.nan, 0.0]])  # concept 0: 1/2 flips; concept 1: 0/2
    assert float(cse._delta_f(flips, np.ones((1, 3)))[0]) == pytest.approx(0.25)


def test_study_end_to_end_on_the_tiny_model(tiny):
    clf, hidden, _ = toy_classifier(tiny, n=96)
    y = clf.predict_from_hidden(hidden).numpy()
    emb = F.normalize(torch.randn(96, 8, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    settings = Settings(n_concepts=4, sae_steps=4, sae_batch=32, net_epochs=1)
    study = cse.run_study("toy", clf, hidden, y, emb, cse.kfold_splits(y, 2), [0], settings, progress=False)
    assert len(cse.evaluated_rows(study)) == 96  # cross-fitting evaluates every sentence once
    table = cse.summary_table(study)
    assert list(table.index) == ["ClassifSAE", *cse.BASELINES] and table["racc"].between(0, 1).all()
    ceiling = cse.ceiling_table(study, n_boot=100)
    assert set(ceiling.decode) >= {"b_dec only", "full SAE", "class mean (oracle)", "z_class (ClassifSAE)"}
    verdicts = cse.claims({"toy": study}, topic_tasks=[], n_boot=100)
    assert len(verdicts) == 6 and {v.outcome for v in verdicts} <= set(stats.OUTCOMES)
    assert [v.outcome for v in verdicts[4:]] == ["not testable"] * 2  # ConceptSim claims: topic tasks only
    frame = cse.claims_frame(verdicts, smoke=True)
    assert frame["verdict"].str.startswith("smoke run, not a finding: ").all()
    assert [v.split(": ")[1] for v in frame["verdict"]] == [v.outcome for v in verdicts]
    rows = claims_rows(frame, paper=cse.PAPER, claim="claim", ours="ours", verdict="verdict",
                       paper_number="paper's number",
                       margin="margin", why="reason")
    assert len(rows) == 6 and all(r["paper's number"] for r in rows)
    deps = cse.departures(settings)
    assert {"what", "paper", "here", "status"} == set(deps.columns) and len(deps) >= 10
    with pytest.raises(ValueError, match="at least 2 folds"):
        cse.kfold_splits(y, 1)


def fake_study(n=80, oracle=1.0, head=1.0, ours_flip=1.0, seed=0):
    """A Study built by hand: ClassifSAE's decode keeps every decision and its concepts flip with rate `ours_flip`
    against a control that never flips; baselines never flip; the class-mean oracle keeps a share `oracle`."""
    g = np.random.default_rng(seed)
    study = cse.Study("toy", n)
    for method in ["ClassifSAE", *cse.BASELINES]:
        fires = (g.random((n, 4)) < 0.5).astype(float)
        flips = np.where(fires == 1, float(method == "ClassifSAE") * (g.random((n, 4)) < ours_flip), np.nan)
        control = np.where(fires == 1, 0.0, np.nan)
        study.records[method] = {
            "consistent": [np.ones(n)], "fires": [fires], "flips": [flips], "control": [control],
            "flips_consistent": [flips], "control_consistent": [control], "rate": [np.full(n, 0.1)],
            "cs_num": [g.random(n)], "cs_den": [np.ones(n)], "sentence_sim": [g.random((n, 4))]}
    study.ceiling = {"class mean (oracle)": [(np.arange(n) < oracle * n).astype(float)]}
    study.head_agreement = [(np.arange(n) < head * n).astype(float)]
    return study


def test_claims_on_constructed_studies():
    held = cse.task_claims(fake_study(), topic_task=True, n_boot=200)
    assert [v.outcome for v in held[:4]] == ["held", "held", "held", "held"]  # RAcc, rate, vs control, vs baselines
    low_ceiling = cse.task_claims(fake_study(oracle=0.5), topic_task=True, n_boot=200)
    assert low_ceiling[0].outcome == "not testable" and "class-mean oracle keeps only 0.500" in low_ceiling[0].reason
    undertrained = cse.task_claims(fake_study(head=0.5), topic_task=True, n_boot=200)
    assert {v.outcome for v in undertrained} == {"not testable"}
    sentiment = cse.task_claims(fake_study(), topic_task=False, n_boot=200)
    assert [v.outcome for v in sentiment[4:]] == ["not testable"] * 2 and "AG News" in sentiment[4].reason
    no_effect = cse.task_claims(fake_study(ours_flip=0.0), topic_task=True, n_boot=200)
    assert no_effect[2].outcome == "inconclusive"  # zero flips against a zero control: the interval is [0, 0]



@pytest.mark.parametrize("seed_per_split, expected", [(False, [(0, 0), (0, 1), (1, 0), (1, 1)]),
                                                      (True, [(0, 0), (1, 1)])])
def test_study_jobs_pair_folds_and_seeds_as_asked(seed_per_split, expected):
    """Cross-fitting with seed_per_split trains once per fold (fold i with seeds[i]), not once per fold and seed."""
    splits = [(np.array([1]), np.array([0])), (np.array([0]), np.array([1]))]
    jobs = cse.study_jobs(splits, [0, 1], seed_per_split)
    assert [(int(test[0]), seed) for _, test, seed in jobs] == expected


def test_finetune_cost_times_the_last_blocks_through_the_bridge_and_changes_nothing(tiny):
    before = {name: (p.requires_grad, p.detach().clone()) for name, p in tiny.original_model.named_parameters()}
    cost = cse.finetune_cost(tiny, ["a short prompt", "another one here"], n_blocks=1, n_train=10, epochs=2)
    assert cost["seconds_per_sentence"] > 0 and cost["minutes"] == pytest.approx(
        cost["seconds_per_sentence"] * 10 * 2 / 60)
    for name, p in tiny.original_model.named_parameters():
        assert p.requires_grad == before[name][0] and p.grad is None and torch.equal(p, before[name][1])
