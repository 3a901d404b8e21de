"""saelab.zoo: SAEs are trained once, reused only when their recorded key matches, retrained when it does not."""

import copy
import json
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch

import saelab
from saelab import hf_twin, report, stats, zoo, zoo_catalog
from saelab.config import cache_dir
from saelab.models import model_fingerprint
from saelab.zoo_spec import budget

TEXTS = [f"sentence number {i} about cats and dogs and the weather" for i in range(40)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def small_spec(**fields):
    base = dict(hook="blocks.0.hook_resid_post", d_sae=64, k=4, n_tokens=512, batch_size=128)
    return zoo.SAESpec(**{**base, **fields})


def get(tiny, specs):
    return zoo.get_saes(tiny, specs, texts=TEXTS, corpus_name="test-corpus", smoke=False, progress=False)


def test_trains_once_then_loads(tiny, cache, one_thread, monkeypatch):
    specs = [small_spec(), small_spec(hook="blocks.1.hook_resid_post", architecture="relu", d_sae=32)]
    first = get(tiny, specs)
    assert list(first) == specs
    assert first[specs[1]].architecture == "relu" and first[specs[1]].cfg.k is None
    assert first[specs[0]].cfg.hook_name == "blocks.0.hook_resid_post"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached SAE was retrained")

    monkeypatch.setattr(zoo, "train_sae", no_training)
    again = get(tiny, specs)
    for spec in specs:
        torch.testing.assert_close(again[spec].W_dec, first[spec].W_dec)


def test_changed_recipe_or_corrupt_folder_retrains(tiny, cache, one_thread):
    spec = small_spec()
    sae = get(tiny, [spec])[spec]
    changed = small_spec(lr=1e-3)
    assert zoo.spec_key(tiny, changed, {"x": 1}) != zoo.spec_key(tiny, spec, {"x": 1})
    other = get(tiny, [changed])[changed]
    assert not torch.equal(other.W_dec, sae.W_dec)

    folders = sorted((cache / "saes" / "zoo").iterdir())
    assert len(folders) == 2
    target = next(f for f in folders if json.loads((f / "cfg.json").read_text())["metadata"]["zoo_spec"]["lr"] == 2e-3)
    (target / "sae_weights.safetensors").write_bytes(b"broken")
    rebuilt = get(tiny, [spec])[spec]
    torch.testing.assert_close(rebuilt.W_dec, sae.W_dec)  # same seed, same data: the same SAE again


def test_corpus_is_extracted_in_bfloat16_where_fast_and_keyed_so(tiny, cache, one_thread, monkeypatch):
    spec = small_spec()
    records = {}
    for fast in ("float32", "bfloat16"):
        monkeypatch.setattr(hf_twin, "fast_selection_dtype", lambda fast=fast: fast)
        assert zoo.corpus_forward_dtype(tiny) == fast
        records[fast] = zoo.resolve_corpus(tiny, TEXTS, "test-corpus", smoke=False)[1]
    assert "forward" not in records["float32"] and records["bfloat16"]["forward"] == "bfloat16"
    assert zoo.spec_key(tiny, spec, records["float32"]) != zoo.spec_key(tiny, spec, records["bfloat16"])

    half = zoo.corpus_model(tiny)  # a copy: the caller's model stays float32
    assert next(half.parameters()).dtype == torch.bfloat16 and next(tiny.parameters()).dtype == torch.float32
    assert half.saelab_fingerprint == model_fingerprint(tiny) + "@bfloat16"
    assert zoo.corpus_model(half) is half and zoo.corpus_forward_dtype(half) == "bfloat16"
    exact, rounded = (saelab.extract(m, TEXTS[:8], spec.hook, pooling="none", progress=False)[spec.hook]
                      for m in (tiny, half))
    assert torch.nn.functional.cosine_similarity(exact, rounded, dim=1).min() > 0.99

    sae = get(tiny, [spec])[spec]  # trained on the bfloat16 copy's activations, scored on the float32 model's
    assert sae.cfg.dataset["model_fingerprint"] == half.saelab_fingerprint
    assert sae.cfg.metadata["zoo_quality"]["n_tokens"] > 0


def test_metadata_and_smoke_scaling(tiny, cache, one_thread):
    spec = small_spec(architecture="jumprelu", options={"jumprelu_init_threshold": 0.1})
    assert spec.options == (("jumprelu_init_threshold", 0.1),) and spec.k is None
    assert "jumprelu_init_threshold=0.1" in spec.label
    sae = get(tiny, [spec])[spec]
    meta = sae.cfg.metadata
    assert meta["zoo_spec"]["hook"] == spec.hook and len(meta["zoo_key"]) == 16
    assert sae.cfg.jumprelu_init_threshold == pytest.approx(0.1)
    smoke = small_spec(d_sae=4096, k=64).scaled_for_smoke()
    assert (smoke.d_sae, smoke.k, smoke.n_tokens, smoke.smoke) == (512, 64, 20 * 512, True)


def test_bad_input(tiny, cache):
    with pytest.raises(ValueError, match="at least one"):
        get(tiny, [])
    with pytest.raises(ValueError, match="twice"):
        get(tiny, [small_spec(), small_spec()])
    with pytest.raises(ValueError, match="corpus_name"):
        zoo.get_saes(tiny, [small_spec()], texts=TEXTS, progress=False)


def test_budgets_scale_with_width_and_auxk_window_with_the_run():
    assert budget(4096) == 2_048_000 and budget(10240) == 5_120_000 and budget(1280) == 2_000_000
    spec = zoo.SAESpec("blocks.6.hook_resid_post")
    assert spec.tokens == 2_048_000 and spec.train_config().total_steps == 500
    assert spec.train_config().dead_threshold == 204_800  # 10% of the run: AuxK acts (sparsify's 10M never would)
    assert zoo.SAESpec("blocks.6.hook_resid_post", n_tokens=1000).tokens == 1000


def test_quality_is_recorded_and_gated(tiny, cache, one_thread):
    spec = small_spec()
    sae = get(tiny, [spec])[spec]
    quality = sae.cfg.metadata["zoo_quality"]
    assert set(quality) >= {"explained_variance", "ce_loss_score", "l0", "frac_alive"}
    assert quality["l0"] <= 4 + 1e-6 and quality["n_tokens"] > 1000  # scored on held-out tweets and sentences
    passes, why = zoo.gate(sae)
    assert passes == (not zoo.QUALITY_GATES["topk"].check(quality))
    assert why.startswith("passes") if passes else why.startswith("below quality gate")
    sae.cfg.metadata["zoo_spec"]["smoke"] = True
    assert zoo.gate(sae) == (False, "smoke-size SAE: not a finding")
    gate = zoo.QualityGate(0.8, 0.9, 0.5, max_l0=50)
    assert gate.check({"explained_variance": 0.7, "ce_loss_score": 0.95, "frac_alive": 0.4, "l0": 60}) == [
        "explained_variance 0.700 < 0.8", "frac_alive 0.400 < 0.5", "l0 60 > 50"]



def test_gated_verdicts_keep_not_testable_and_mark_smoke_runs(tiny, cache, one_thread, capsys):
    spec = small_spec()
    sae = get(tiny, [spec])[spec]
    sae.cfg.metadata["zoo_spec"]["smoke"] = True  # a smoke-size SAE never passes its gate
    verdicts = [stats.verdict(stats.Estimate(0.3, 0.2, 0.4, n=50), claim="A1 held on its own"),
                stats.verdict(stats.Estimate(0.3, 0.2, 0.4, n=50), claim="A2 needs a ceiling",
                              preconditions={"ceiling": (False, "the probe reads nothing here")})]
    table = zoo.verdict_table(verdicts, [sae], smoke=False, paper_numbers={"A1": "0.25"}, banner="SMOKE")
    assert list(table["rule outcome"]) == ["held", "not testable"]
    assert list(table["verdict"]) == ["inconclusive: SAE below quality gate", "not testable"]
    assert list(table["paper's number"]) == ["0.25", ""] and table["ours"].iloc[0].startswith("0.300")
    smoke = zoo.verdict_table(verdicts, [sae], smoke=True, paper_numbers={}, banner="SMOKE BANNER", signed=True)
    assert "SMOKE BANNER" in capsys.readouterr().out and smoke["ours"].iloc[0].startswith("+0.300")
    assert smoke["verdict"].str.startswith("smoke run, not a finding: ").all()
    ungated = zoo.verdict_table(verdicts, [], smoke=False, paper_numbers=["0.25", "0.5"])  # nothing to gate
    assert list(ungated["verdict"]) == ["held", "not testable"] and list(ungated["paper's number"]) == ["0.25", "0.5"]
    with pytest.raises(ValueError, match="one per claim"):
        zoo.verdict_table(verdicts, [], smoke=False, paper_numbers=["0.25"])


def test_gate_touches_only_the_claims_resting_on_a_failing_sae(tiny, cache, one_thread, capsys):
    spec = small_spec()
    good = get(tiny, [spec])[spec]
    good.cfg.metadata["zoo_quality"] = {"explained_variance": 0.95, "ce_loss_score": 0.99, "frac_alive": 0.9, "l0": 4}
    assert zoo.gate(good)[0]
    bad = copy.deepcopy(good)
    bad.cfg.metadata["zoo_quality"] = {**good.cfg.metadata["zoo_quality"], "frac_alive": 0.1}
    est = stats.Estimate(0.3, 0.2, 0.4, n=50)
    verdicts = [stats.verdict(est, claim="B1 on the good SAE", rests_on=["good"]),
                stats.verdict(est, claim="B2 on both", rests_on=["good", "bad"]),
                stats.verdict(est, claim="B3 on every SAE")]
    table = zoo.verdict_table(verdicts, {"good": good, "bad": bad}, smoke=False, paper_numbers={})
    assert "every verdict resting on one of them" in capsys.readouterr().out
    assert list(table["verdict"]) == ["held"] + ["inconclusive: SAE below quality gate"] * 2
    assert list(table["rule outcome"]) == ["held"] * 3 and list(table["below gate"]) == ["", "bad", "bad"]
    rows = report.claims_rows(table, paper="P", claim="claim", ours="ours", verdict="verdict", why="reason")
    assert "the rule alone says" not in rows[0]["why"]
    assert rows[1]["why"].endswith("the rule alone says: held (below their gate: bad)")
    with pytest.raises(ValueError, match="rests on \\['missing'\\]"):
        zoo.gate_claims(stats.claims_table([stats.verdict(est, claim="B4", rests_on=["missing"])]), "verdict",
                        {"bad": bad})


def test_catalog_resolves_on_gemma_depth():
    gemma = SimpleNamespace(cfg=SimpleNamespace(n_layers=18, model_name="gemma-3-270m"))
    assert [s.hook for s in zoo_catalog.probe_specs(gemma).values()][:3] == [
        "blocks.5.hook_resid_post", "blocks.8.hook_resid_post", "blocks.12.hook_resid_post"]
    sweep = zoo_catalog.notebook_specs(gemma, "06")
    assert len(sweep) == 12 and {s.hook for s in sweep.values()} == {"blocks.6.hook_resid_post"}
    assert zoo_catalog.notebook_specs(gemma, "02") == sweep  # notebook 02's sweep is notebook 06's SAEs
    layers = [s.hook for name, s in zoo_catalog.polysemy_specs(gemma).items() if name.startswith("layer")]
    assert layers == [f"blocks.{b}.hook_resid_post" for b in (1, 5, 8, 12, 16)]
    assert len(zoo_catalog.catalog_hooks(gemma)) == 9
    specs = zoo_catalog.all_specs(gemma)
    assert len(specs) == 27 and specs[zoo.SAESpec("blocks.8.hook_resid_post")] == ["04", "05", "07"]
    first = zoo_catalog.all_specs(gemma, ["07", "04"])  # `make zoo` for one class's notebooks, in their order
    assert list(first)[0] == zoo.SAESpec("blocks.8.hook_resid_post") and len(first) == 5 and set(first) <= set(specs)
    with pytest.raises(ValueError, match="notebook='03'"):
        zoo_catalog.all_specs(gemma, ["03"])
    shallow = SimpleNamespace(cfg=SimpleNamespace(n_layers=6, model_name="tiny-gpt2"))  # layers 1, 2, 3, 4
    specs5 = zoo_catalog.polysemy_specs(shallow)
    layers = [int(name.split()[1]) for name in specs5 if name.startswith("layer ")]
    middle = specs5[f"layer {layers[len(layers) // 2]}"].hook  # how notebook 05 finds the middle layer
    assert layers == [1, 2, 3, 4] and specs5["relu"].hook == specs5["width 1280"].hook == middle
    smol = SimpleNamespace(cfg=SimpleNamespace(n_layers=30, model_name="smollm2-135m"))
    assert [s.hook for s in zoo_catalog.all_specs(smol)] == ["blocks.14.hook_resid_post"]


def test_table_lists_built_and_missing(tiny, cache, one_thread):
    built, missing = small_spec(), small_spec(d_sae=32)
    get(tiny, [built])
    frame = zoo.table(tiny, {"built": built, "missing": missing}, texts=TEXTS, corpus_name="test-corpus", smoke=False)
    assert frame.loc["missing", "gate"].startswith("not built")
    assert frame.loc["built", "explained_variance"] <= 1 and frame.loc["built", "l0"] <= 4 + 1e-6
    assert frame.loc["built", "gate"] == "pass" or frame.loc["built", "gate"].startswith("below quality gate")


BUILD_SCRIPT = textwrap.dedent("""
    import sys
    from saelab import zoo
    from saelab.models import tiny_model
    texts = [f"sentence number {i} about cats and dogs and the weather" for i in range(40)]
    specs = [zoo.SAESpec("blocks.0.hook_resid_post", d_sae=64, k=4, n_tokens=512, batch_size=128),
             zoo.SAESpec("blocks.1.hook_resid_post", d_sae=2048, k=8, n_tokens=512 * 600, batch_size=512)]
    zoo.get_saes(tiny_model(seed=0), specs, texts=texts, corpus_name="test-corpus", smoke=False, progress=False)
""")


def run_build(cache_dir, wait_for_checkpoint: bool):
    env = {**os.environ, "SAELAB_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT], env=env)
    if not wait_for_checkpoint:
        assert process.wait(timeout=600) == 0
        return
    deadline = time.monotonic() + 300
    while not list((cache_dir / "saes" / "zoo").glob("*.checkpoints/step_*")):
        assert process.poll() is None, "the build ended before its second SAE wrote a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.kill()  # as a user's Ctrl-C or a lost machine would, mid-way through the second SAE
    process.wait()


def test_build_resumes_after_a_kill_and_matches_an_uninterrupted_build(tmp_path):
    """`make zoo` killed mid-way: the finished SAE is kept, the running one resumes from its checkpoint, and the
    result is the same SAE an uninterrupted build gives."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    run_build(killed, wait_for_checkpoint=True)
    folders = sorted((killed / "saes" / "zoo").iterdir())
    assert any((f / "cfg.json").exists() for f in folders)  # the first SAE was finished and saved
    first_saved = next(f for f in folders if (f / "cfg.json").exists())
    stamp = (first_saved / "sae_weights.safetensors").stat().st_mtime_ns
    run_build(killed, wait_for_checkpoint=False)  # resumes
    assert (first_saved / "sae_weights.safetensors").stat().st_mtime_ns == stamp  # loaded, not retrained
    assert not list((killed / "saes" / "zoo").glob("*.checkpoints"))  # checkpoints removed once saved
    run_build(clean, wait_for_checkpoint=False)
    for folder in sorted((clean / "saes" / "zoo").iterdir()):
        resumed = zoo.SAE.load(killed / "saes" / "zoo" / folder.name)
        torch.testing.assert_close(resumed.W_dec, zoo.SAE.load(folder).W_dec)


def test_heldout_token_variance_reads_the_zoos_heldout_cache(tiny, cache, one_thread):
    hooks = zoo_catalog.catalog_hooks(tiny)
    acts = zoo.Heldout(tiny, hooks, smoke=True, progress=False).acts[hooks[0]]
    expected = float(((acts - acts.mean(0)) ** 2).sum(-1).mean())
    folders = set(cache_dir("activations").iterdir())
    assert zoo.heldout_token_variance(tiny, hooks[0], smoke=True) == pytest.approx(expected, rel=1e-5)
    assert set(cache_dir("activations").iterdir()) == folders  # read from the zoo's cache: nothing extracted again


def test_build_times_each_phase_and_skips_extraction_once_built(cache, one_thread):
    """`make zoo`'s phases (load, extract, train and score) are timed apart; a second build extracts nothing."""
    first = zoo.build(["tiny-gpt2"], notebooks=["07"], smoke=True, progress=False)
    phases = first.attrs["phase_minutes"]["tiny-gpt2"]
    assert set(phases) == {"load model", "extract", "train and score"} and min(phases.values()) >= 0
    assert (first["model"] == "tiny-gpt2").all() and not first["gate"].str.startswith("not built").any()
    folders = set(cache_dir("activations").iterdir())
    again = zoo.build(["tiny-gpt2"], notebooks=["07"], smoke=True, progress=False)
    assert set(cache_dir("activations").iterdir()) == folders
    assert again.drop(columns="minutes").equals(first.drop(columns="minutes"))
