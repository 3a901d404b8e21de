"""Notebook 05's protocol: the WiC-like filter, standardised raw units, the ceiling probe, and the claims' verdicts."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from saelab import polysemy as ps
from saelab import polysemy_ceiling as pc
from saelab import polysemy_claims as pcl
from saelab import polysemy_eval as pse
from saelab.polysemy_pairs import choose_pairs, wic_like
from saelab.stats import Estimate
from saelab.tasks import WiCPair, load_task

LONG = "one two three four {w} five"


def pair(word, label, s1, s2, pos="noun", c1=LONG, c2=LONG):
    return WiCPair(word, pos, c1.format(w=word), c2.format(w=word), label, lemma=word, synset_1=s1, synset_2=s2)


LEX = {"a.n.01": "noun.artifact", "a.n.02": "noun.act", "a.n.03": "noun.artifact", "v.v.01": "verb.motion",
       "v.v.02": "verb.social"}


def test_wic_like_prunes_fine_senses_short_contexts_and_other_parts_of_speech():
    pairs = [pair("a", 1, "a.n.01", "a.n.01"),                      # kept
             pair("a", 0, "a.n.01", "a.n.02"),                      # kept: different lexicographer files
             pair("a", 0, "a.n.01", "a.n.03"),                      # dropped: same file (near-identical senses)
             pair("a", 1, "a.n.01", "a.n.01", c1="too short {w}"),  # dropped: 3 words
             pair("v", 0, "v.v.01", "v.v.02", pos="verb"),          # kept
             pair("v", 1, "v.v.01", "v.v.01", pos="verb"),          # kept
             pair("j", 1, "j.a.01", "j.a.01", pos="adj")]           # dropped: adjective
    kept = wic_like(pairs, lexnames=LEX)
    assert kept == [pairs[0], pairs[1], pairs[4], pairs[5]]
    assert wic_like(pairs, lexnames=LEX, pos=("adj",), balance=False) == [pairs[6]]
    unbalanced = pairs + [pair("a", 1, "a.n.02", "a.n.02")]
    assert len(wic_like(unbalanced, lexnames=LEX)) == 4  # one noun pair per label
    assert len(wic_like(unbalanced, lexnames=LEX, balance=False)) == 5
    with pytest.raises(ValueError, match="no known synset"):
        wic_like([pair("x", 0, "x.n.01", "x.n.02")], lexnames=LEX)
    with pytest.raises(ValueError, match="min_words"):
        wic_like(pairs, lexnames=LEX, min_words=0)


def test_wic_like_on_the_shipped_pairs():
    task = load_task("wordnet-wic")
    kept = wic_like(task.train + task.test)
    assert {p.pos for p in kept} == {"noun", "verb"}
    assert sum(p.label for p in kept) * 2 == len(kept) > 300
    assert all(min(len(p.context_1.split()), len(p.context_2.split())) >= 5 for p in kept)


def constructed(n=160, d=12, seed=0, informative=True):
    """ProbeActivations of n pairs at hook "h": same-sense contexts share a pattern (when informative), and unit 0
    is a massive dimension that wins every raw argmax."""
    rng = np.random.default_rng(seed)
    labels = np.tile([1, 0], n // 2)
    pairs = [WiCPair(f"w{i % 20}", "noun", "c1", "c2", int(lab), lemma=f"w{i % 20}") for i, lab in enumerate(labels)]
    probe = ps.ProbeSet(pairs, list(range(n)), ["p"] * 2 * n, [(1, 2)] * 2 * n, ["w"] * n,
                        np.zeros((n, 2), bool), [], n)
    h1 = rng.standard_normal((n, d))
    h2 = np.where((labels[:, None] == 1) & informative, h1 + 0.1 * rng.standard_normal((n, d)),
                  rng.standard_normal((n, d)))
    x = np.stack([h1, h2], 1)
    x[:, :, 0] += 1000.0
    acts = torch.as_tensor(np.stack([x, x], 2), dtype=torch.float32)  # both reads alike
    return ps.ProbeActivations(probe, {"h": acts})


def test_raw_units_are_degenerate_until_standardised_on_the_training_pairs():
    acts = constructed()
    raw = pse.evaluate_raw(acts, "h")
    assert raw.metrics["specificity"] == 0 and raw.metrics["recall"] == 1  # unit 0 always wins
    train = np.arange(len(acts.probe)) < 100
    scaled = pse.evaluate_raw(acts, "h", fit=train)
    assert scaled.metrics["specificity"] > 0.7 and scaled.metrics["recall"] > 0.9
    mean, std = pse.unit_scaler(acts, "h", train)
    x = acts.pair_acts("h")[:100].reshape(-1, 12)
    torch.testing.assert_close(mean, x.mean(0)) and torch.testing.assert_close(std, x.std(0))
    with pytest.raises(ValueError, match="one bool per pair"):
        pse.evaluate_raw(acts, "h", fit=np.ones(3, bool))


def test_take_keeps_the_chosen_pairs():
    acts = constructed(n=20)
    mask = np.arange(20) % 3 == 0  # both labels
    sub = acts.take(mask)
    assert len(sub.probe) == 7 and len(sub.probe.prompts) == 14 and sub.acts["h"].shape[0] == 7
    torch.testing.assert_close(sub.acts["h"], acts.acts["h"][mask])
    full = pse.evaluate_raw(acts, "h")
    part = full.take(mask)
    assert part.labels.tolist() == full.labels[mask].tolist() and len(part) == 7
    assert part.metrics == pse.evaluate_raw(sub, "h").metrics
    with pytest.raises(ValueError, match="keeps no pair"):
        acts.take(np.zeros(20, bool))


def test_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 50), rng.integers(0, 5, 50).astype(float)  # ties
    assert pc.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(pc.auroc(np.ones(5), np.arange(5.0)))


def test_ceiling_probe_sees_sense_information_only_where_there_is_some():
    good = pc.ceiling_probe(constructed(), "h", n_boot=200)
    assert good.auroc.value > 0.9 and good.clears and good.precondition() == (True, "")
    flat = pc.ceiling_probe(constructed(informative=False), "h", n_boot=200)
    assert flat.auroc.low < pc.CEILING_LEVEL and not flat.clears
    ok, why = flat.precondition()
    assert not ok and "not clear of 0.6" in why
    table = pc.ceiling_table({"h": good})
    assert bool(table.loc["h", "clears 0.6"])


Spec = namedtuple("Spec", "label hook")


def decisions(labels, specificity, rng):
    """A PSEvalResult whose different-sense pairs get different latents with probability `specificity`."""
    n = len(labels)
    same = np.where(labels == 1, rng.random(n) < 0.8, rng.random(n) > specificity)
    codes = torch.zeros(n, 2, 4)
    codes[:, 0, 0] = 1
    codes[:, 1, 0] = torch.as_tensor(same, dtype=torch.float32)
    codes[:, 1, 1] = torch.as_tensor(~same, dtype=torch.float32)
    return pse.evaluate_codes(codes, labels)


def test_claims_on_constructed_cases():
    rng = np.random.default_rng(0)
    labels = np.tile([1, 0], 300)
    specs = {name: Spec(name, "mid") for name in ("relu", "topk", "jumprelu", "attn", "mlp", "wide", "widest")}
    specs |= {"shallow": Spec("shallow", "low"), "deep": Spec("deep", "high")}
    quality = {"shallow": 0.3, "relu": 0.5, "deep": 0.9, "attn": 0.9, "mlp": 0.5, "wide": 0.8, "widest": 0.8}
    results = {s: decisions(labels, quality.get(name, 0.5), rng) for name, s in specs.items()}
    results[specs["topk"]] = results[specs["jumprelu"]] = results[specs["relu"]]  # no difference at all
    results[specs["widest"]] = results[specs["wide"]]
    sweeps = {"layer": {1: specs["shallow"], 2: specs["relu"], 3: specs["deep"]},
              "component": {"residual": specs["relu"], "attention out": specs["attn"], "MLP out": specs["mlp"]},
              "activation": {"relu": specs["relu"], "topk": specs["topk"], "jumprelu": specs["jumprelu"]},
              "width": {1: specs["relu"], 2: specs["wide"], 3: specs["widest"]}}
    clear = Estimate(0.8, 0.7, 0.9)
    found = {h: pc.Ceiling(h, clear, np.zeros(1), 600, 5) for h in ("low", "mid", "high")}
    frontier = [specs[n] for n in ("relu", "mlp", "wide", "attn")]
    ev = {s: e for s, e in zip(frontier, (0.1, 0.2, 0.3, 0.4))}  # rises with specificity
    verdicts = pcl.claims(results, sweeps, found, ev, pair_set="test", frontier=frontier, n_boot=300)
    got = {v.claim.split()[0]: v.outcome for v in verdicts}
    assert got == {"P1": "held", "P2a": "held", "P2b": "held", "P3a": "held", "P3b": "held", "P4a": "held",
                   "P4b": "held", "P5": "contradicted"}
    assert all("[test]" in v.claim and v.correction.startswith("Holm") for v in verdicts)
    rests = {v.claim.split()[0]: v.rests_on for v in verdicts}  # what the quality gate looks at, per claim
    assert rests["P2b"] == (specs["attn"], specs["mlp"]) and rests["P5"] == tuple(frontier)
    found["high"] = pc.Ceiling("high", Estimate(0.55, 0.5, 0.6), np.zeros(1), 600, 5)
    got = {v.claim.split()[0]: v for v in pcl.claims(results, sweeps, found, ev, pair_set="test",
                                                      frontier=frontier, n_boot=300)}
    assert got["P1"].outcome == "not testable" and "ceiling at high" in got["P1"].reason
    assert got["P2a"].outcome == "held"


def test_frontier_rho_needs_three_saes():
    rng = np.random.default_rng(0)
    r = decisions(np.tile([1, 0], 20), 0.5, rng)
    with pytest.raises(ValueError, match="at least 3 SAEs"):
        pcl.frontier_rho([r, r], [0.1, 0.2])


def test_choose_pairs_samples_both_sets_balanced():
    task = load_task("wordnet-wic")
    pairs, wic = choose_pairs(task.train + task.test, 40)
    assert len(pairs) == 40 and sum(p.label for p in pairs) == 20
    assert sum(p in wic for p in pairs) == 20 and wic == set(wic_like(task.train + task.test))
    everything, _ = choose_pairs(task.test)
    assert everything == task.test
    hub = [WiCPair("w", "noun", "a w b", "c w d", 1)] * 2
    assert choose_pairs(hub)[1] == set(hub)  # no synsets: SuperGLUE WiC is pruned already


def test_depth_claim_starts_from_the_shallowest_layer_whose_ceiling_clears():
    rng = np.random.default_rng(1)
    labels = np.tile([1, 0], 300)
    layers = {1: Spec("shallow", "low"), 2: Spec("middle", "mid"), 3: Spec("deep", "high")}
    others = {name: Spec(name, "mid") for name in ("relu", "topk", "jumprelu", "attn", "mlp", "wide", "widest")}
    quality = {"shallow": 0.3, "middle": 0.6, "deep": 0.9}
    results = {s: decisions(labels, quality.get(s.label, 0.5), rng) for s in [*layers.values(), *others.values()]}
    sweeps = {"layer": layers, "component": {"residual": others["relu"], "attention out": others["attn"],
                                             "MLP out": others["mlp"]},
              "activation": {k: others[k] for k in ("relu", "topk", "jumprelu")},
              "width": {1: others["relu"], 2: others["wide"], 3: others["widest"]}}
    found = {h: pc.Ceiling(h, Estimate(0.8, 0.7, 0.9), np.zeros(1), 600, 5) for h in ("mid", "high")}
    found["low"] = pc.Ceiling("low", Estimate(0.55, 0.5, 0.6), np.zeros(1), 600, 5)  # block 1 fails its ceiling
    frontier = [others[n] for n in ("relu", "mlp", "wide")]
    p1 = pcl.claims(results, sweeps, found, dict.fromkeys(frontier, 0.5), pair_set="t", frontier=frontier,
                    n_boot=200)[0]
    assert p1.claim.startswith("P1") and p1.outcome == "held"
    assert [name for name, _, _ in p1.preconditions] == ["ceiling at high", "ceiling at mid"]
