"""saelab's internals on every model layout it supports: GPT-2, Gemma 2, Gemma 3 and Llama, as tiny random bridges
built in code (`saelab.models.tiny_model(layout=...)`). Each test checks saelab's result against the model's own
computation (Hugging Face's forward pass, hidden states or a plain PyTorch hook), never against saelab itself:
extraction, an SAE spliced in at a hook, steered batched generation with a KV cache, the logit lens and the final
read-out, and the prompted classifier's one-token forward. A model without the bridge's layout fails with a message
that names it."""

import io
import json
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

import saelab
from saelab import steering as st
from saelab.classifier import PromptedClassifier, last_block_parts
from saelab.latents import final_norm_and_unembed, latent_logits, logit_lens
from saelab.metrics import reconstruction_metrics
from saelab.models import TINY_MODELS, tiny_model
from saelab.probing import label_logits
from saelab.sae import SAE, SAEConfig
from saelab.tiny_models import TINY_LAYOUTS

LAYOUTS = sorted(TINY_LAYOUTS)
TEXTS = ["the cat sat on the mat", "hello", "Sparse autoencoders find features."]
PROMPTS = ["hello there", "a", "the cat sat on"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=LAYOUTS)
def model(request):
    return tiny_model(seed=0, n_layers=3, layout=request.param)


def _ids(model, text):
    return torch.tensor([model.tokenizer(text)["input_ids"]])


def test_every_layout_boots_with_the_classic_hook_names_and_transformers_logits(model):
    for site in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
        assert f"blocks.1.{site}" in model.hook_dict
    ids = _ids(model, TEXTS[0])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model.original_model(ids).logits, atol=1e-5, rtol=1e-5)


def test_extraction_equals_hugging_face_hidden_states(model):
    """blocks.L.hook_resid_post is hidden_states[L + 1]; resid_pre of block L is hidden_states[L]."""
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
    acts = saelab.extract(model, TEXTS, hooks, pooling="mean", cache=False, progress=False, include_bos=True)
    for i, text in enumerate(TEXTS):
        with torch.no_grad():
            hidden = model.original_model(_ids(model, text), output_hidden_states=True).hidden_states
        torch.testing.assert_close(acts["blocks.0.hook_resid_pre"][i], hidden[0][0].mean(0), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(acts["blocks.1.hook_resid_post"][i], hidden[2][0].mean(0), atol=1e-4, rtol=1e-4)
    assert acts["blocks.1.hook_mlp_out"].shape == (len(TEXTS), model.cfg.d_model)


def test_an_sae_spliced_in_at_a_hook(model):
    """The CE loss with a perfect (identity) SAE is the clean CE loss; a random SAE changes it."""
    d = model.cfg.d_model
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, architecture="relu", hook_name="blocks.1.hook_resid_post"), seed=0)
    m = reconstruction_metrics(model, sae, TEXTS, progress=False)
    assert m["ce_loss_with_sae"] != pytest.approx(m["ce_loss_without_sae"])
    identity = SAE(SAEConfig(d_in=d, d_sae=d, architecture="relu", hook_name="blocks.1.hook_resid_post",
                             apply_b_dec_to_input=False), seed=0)
    with torch.no_grad():
        identity.W_enc.copy_(torch.eye(d))
        identity.W_dec.copy_(torch.eye(d))
        identity.b_enc.fill_(1e3)   # every latent active: relu(x + 1000) - 1000 = x through b_dec
        identity.b_dec.fill_(-1e3)
    m = reconstruction_metrics(model, identity, TEXTS, progress=False)
    assert m["ce_loss_with_sae"] == pytest.approx(m["ce_loss_without_sae"], abs=1e-3)


@torch.no_grad()
def test_batched_steered_generation_with_a_kv_cache_matches_recomputation(model, greedy_by_hand):
    vectors = torch.randn(len(PROMPTS), model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    batched = st.generate(model, PROMPTS, max_new_tokens=5, min_new_tokens=5, hook="blocks.0.hook_resid_post",
                          vectors=vectors)
    assert [g.ids for g in batched] == [greedy_by_hand(model, p, vectors[i], 5) for i, p in enumerate(PROMPTS)]
    plain = st.generate(model, PROMPTS, max_new_tokens=5, min_new_tokens=5)
    assert [g.ids for g in plain] == [greedy_by_hand(model, p, torch.zeros(model.cfg.d_model), 5) for p in PROMPTS]


@torch.no_grad()
def test_final_norm_and_unembedding_give_the_models_logits(model, monkeypatch):
    """What the logit lens and zero-shot read-outs use is what the model's forward computes from the last block,
    Gemma 2's final logit soft-capping included (made tight here, so that it matters on a random model)."""
    config = model.original_model.config
    if getattr(config, "final_logit_softcapping", None):
        monkeypatch.setattr(config, "final_logit_softcapping", 0.2)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    ids = _ids(model, TEXTS[0])
    logits, cache = model.run_with_cache(ids, names_filter=[last])
    norm, unembed = final_norm_and_unembed(model)
    torch.testing.assert_close(unembed(norm(cache[last])), logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(label_logits(model, cache[last][0], [5, 9]), logits[0][:, [5, 9]], atol=1e-5,
                               rtol=1e-5)


@torch.no_grad()
def test_logit_lens_is_the_direction_through_norm_and_unembedding(model):
    d = model.cfg.d_model
    sae = SAE(SAEConfig(d_in=d, d_sae=8, architecture="relu", hook_name="blocks.1.hook_resid_post"), seed=1)
    norm, unembed = final_norm_and_unembed(model)
    by_hand = unembed(norm(sae.W_dec[2:3]) - norm(torch.zeros(1, d)))
    by_hand = by_hand - unembed(torch.zeros(1, d))
    torch.testing.assert_close(latent_logits(model, sae, [2]), by_hand, atol=1e-4, rtol=1e-4)
    lens = logit_lens(model, sae, 2, k=3)
    assert lens["top"][0][0] == model.tokenizer.decode([int(by_hand[0].argmax())])


@torch.no_grad()
def test_the_classifiers_one_token_forward_is_the_models_own(model):
    """features(h) = ln_final(last block(h)) for h at position 0: on a one-token input (BOS alone) this is exactly
    what the model computes, on every layout (learned positions, rotary, Gemma 3's layer types)."""
    first, last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_pre", "ln_final.hook_out"
    ids = torch.tensor([[model.tokenizer.bos_token_id]])
    _, cache = model.run_with_cache(ids, names_filter=[first, last])
    clf = PromptedClassifier(model, ["negative", "positive"])
    torch.testing.assert_close(clf.features(cache[first][:, 0]), cache[last][:, 0], atol=1e-5, rtol=1e-5)
    block, norm, rotary, _ = last_block_parts(model)
    assert block is model.blocks[-1] and norm is model.ln_final
    assert (rotary is None) == (model.original_model.config.model_type == "gpt2")


def test_the_classifier_trains_through_its_forward(model):
    """The features are differentiable in h (ConceptSHAP and HI-Concept train through them)."""
    clf = PromptedClassifier(model, ["negative", "positive"])
    clf.fitted = True
    h = torch.randn(4, model.cfg.d_model, requires_grad=True)
    with clf.frozen_model():
        clf.logits_from_hidden(h).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert all(p.requires_grad for p in model.parameters())


def test_an_unsupported_layout_fails_with_a_clear_message():
    class NotABridge(torch.nn.Module):
        cfg = type("cfg", (), {"n_layers": 2, "d_model": 8})()

    with pytest.raises(TypeError, match=r"(?s)blocks.*ln_final.*NotABridge"):
        PromptedClassifier(NotABridge(), ["a", "b"])


def test_tiny_models_load_by_name_and_from_the_environment(monkeypatch):
    assert set(TINY_MODELS) == {f"tiny-{layout}" for layout in LAYOUTS}
    monkeypatch.setenv("SAELAB_MODEL", "tiny-gpt2")
    model = saelab.load_model()
    assert model.saelab_name == "tiny-gpt2" and model.original_model.config.model_type == "gpt2"
    assert model.cfg.n_layers == 6
    # the word-level vocabulary: the words PS-Eval and the zero-shot prompts read are whole tokens
    for word in (" negative", " neutral", " positive", " bank"):
        assert len(model.tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    monkeypatch.delenv("SAELAB_MODEL")
    assert saelab.config.default_model() == "gemma-3-270m"


# ---- no Gemma-3-only constant or Hugging Face module path outside saelab.models ----------------------------------

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0[0-6]_*.ipynb"))
HF_PATHS = re.compile(r"\.model\.(layers|norm|rotary_emb|embed_tokens)\b|\btransformer\.(h|ln_f|wte)\b|\.lm_head\b"
                      r"|original_model\.model\b")
HIDDEN_STATE_INDEX = re.compile(r"hidden_states\[\d")  # hidden_states[7] is block 6's output on one model only
HOOK_LITERAL = re.compile(r"blocks\.(?!0\.)\d+\.")  # "blocks.6.hook_resid_post": fixed for one depth (block 0: any)
MODEL_LITERAL = re.compile(r"gemma-3-270m")  # the model's name comes from the model (model.saelab_name)
#: where naming them is the point: the models module (and the tiny layouts it boots), and the default's name
MODEL_MODULES = {"models.py", "tiny_models.py", "config.py"}
#: zoo.build's default list names the embedded models `make zoo` builds (a setting, not a computed constant)
ALLOWED = {("zoo.py", "gemma-3-270m")}


def _code_without_comments(source: str) -> str:
    """Python source with comments removed (comments may say "block 6 of 18"; code may not compute with it)."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:  # a comment runs to the end of its line
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col].rstrip()
    return "\n".join(lines)


def _outside_paper_presets(code: str) -> str:
    """The code minus `if PRESET == "paper":` branches, which spell out the paper's own model and layers."""
    kept, inside = [], False
    for line in code.splitlines():
        if line.startswith('if PRESET == "paper"'):
            inside = True
            continue
        if inside and line and not line[0].isspace():
            inside = False
        if not inside:
            kept.append(line)
    return "\n".join(kept)


def _found(code: str, patterns) -> list[str]:
    lines, hits = code.splitlines(), []
    for pattern in patterns:
        for match in pattern.finditer(code):
            line = code[:match.start()].count("\n")
            hits.append(f"{match.group(0)!r} in line {line + 1}: {lines[line].strip()}")
    return hits


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_resolve_hooks_and_names_from_the_model(path):
    """Notebook code (comments aside) names no block number, no hidden_states index, no Hugging Face module path
    and no "gemma-3-270m": hooks come from depth fractions (`zoo_catalog.block_at`) or the SAEs, names from
    `model.saelab_name`. The `PRESET == "paper"` branches are exempt: they spell out the paper's own layers."""
    cells = json.loads(path.read_text())["cells"]
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            code = _outside_paper_presets(_code_without_comments("".join(cell["source"])))
            found += [f"cell {i}: {hit}" for hit in _found(code, [HOOK_LITERAL, HIDDEN_STATE_INDEX, HF_PATHS,
                                                                    MODEL_LITERAL])]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("path", [p for p in sorted((ROOT / "saelab").rglob("*.py")) if p.name not in MODEL_MODULES],
                         ids=lambda p: str(p.relative_to(ROOT / "saelab")))
def test_library_modules_reach_the_model_through_the_bridge(path):
    """No library module outside saelab.models walks Hugging Face module paths (`hf.model.layers`, `lm_head`, ...)
    or indexes hidden states by a number: they go through the bridge's components and TransformerLens hook names,
    which every layout shares. Error-message examples of hook names are fine; code that names the embedded model
    is not (one setting is allowed: `ALLOWED`)."""
    code = _code_without_comments(path.read_text())
    found = [hit for hit in _found(code, [HF_PATHS, HIDDEN_STATE_INDEX, MODEL_LITERAL])
             if not any(path.name == name and literal in hit for name, literal in ALLOWED)]
    assert not found, "\n".join(found)


def test_the_paper_presets_name_real_registry_sae_ids():
    """Each notebook's `PRESET = "paper"` parameter cell, run as written, names SAEs that exist in SAELens' registry
    with the hook and architecture they declare (registry folders are not downloaded: that needs the hub)."""
    from saelab import pretrained

    checked = 0
    for path in NOTEBOOKS:
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        params = next((c for c in cells if 'PRESET = "embedded"' in "".join(c["source"])), None)
        if params is None:
            continue
        namespace: dict = {}
        exec("".join(cells[0]["source"]), namespace)  # the imports
        exec("".join(params["source"]).replace('PRESET = "embedded"', 'PRESET = "paper"', 1), namespace)
        assert namespace["MODEL"] and namespace["MODEL"] != "gemma-3-270m", path.stem
        specs = list(namespace["SAES"].values()) + [namespace.get("SECOND_SAE")]
        for spec in [s for s in specs if isinstance(s, pretrained.PretrainedSpec)]:
            lookup = pretrained.registry()[spec.release]
            assert spec.sae_id in lookup.saes_map, (path.stem, spec)
            if "res-jb" in spec.release:  # Joseph Bloom's ids are hook names (the feature-splitting ones + width)
                assert spec.sae_id.startswith(spec.hook) and spec.architecture == "relu"
            if spec.release.startswith("gemma-scope"):  # Gemma Scope: JumpReLU on layer_{L}'s resid_post
                layer = spec.sae_id.split("/")[0].removeprefix("layer_")
                assert spec.hook == f"blocks.{layer}.hook_resid_post" and spec.architecture == "jumprelu"
                assert {"width_16k": 16384, "width_65k": 65536}[spec.sae_id.split("/")[1]] == spec.d_sae
            checked += 1
        if "EXAMPLE" in namespace:
            assert namespace["EXAMPLE"] in namespace["SAES"]
    assert checked >= 20


@pytest.mark.parametrize("layout", ["gpt2", "gemma2"])
def test_a_half_precision_model_runs_every_path(layout):
    """dtype="bfloat16" (what a hub model on a GPU would use): extraction comes back in fp32, an fp32 SAE splices
    in, steering and the classifier cast to the model's dtype, and the parameter memory halves."""
    model = saelab.load_model(f"tiny-{layout}", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    hook = "blocks.2.hook_resid_post"
    acts = saelab.extract(model, TEXTS, hook, pooling="none", cache=False, progress=False)
    assert acts.tensor.dtype == torch.float32 and torch.isfinite(acts.tensor).all()
    sae = SAE(SAEConfig(d_in=64, d_sae=32, architecture="relu", hook_name=hook), seed=0)
    assert np.isfinite(reconstruction_metrics(model, sae, TEXTS, progress=False)["ce_loss_with_sae"])
    generated = st.generate(model, PROMPTS, max_new_tokens=3, min_new_tokens=3, hook=hook,
                            vectors=st.steering_vectors(sae, [1, 2, 3], 4.0, [1.0, 1.0, 1.0]))
    assert all(len(g.ids) == 3 for g in generated)
    assert latent_logits(model, sae, [0, 1]).dtype == torch.float32
    clf = PromptedClassifier(model, ["negative", "positive"], readout="label_tokens")
    assert clf.proba_from_hidden(acts.tensor[:4]).dtype == torch.float32
    half = saelab.models.memory_report(model)["parameters_gib"]
    full = saelab.models.memory_report(saelab.load_model(f"tiny-{layout}"))["parameters_gib"]
    assert half == pytest.approx(full / 2)
    with pytest.raises(ValueError, match="dtype='float8'.*bfloat16"):
        saelab.load_model(f"tiny-{layout}", dtype="float8")
