"""saelab.hf_twin: the plain Hugging Face copy of a bridge gives the bridge's own numbers (logits, residual streams,
steered generations) on every tiny architecture, is rebuilt when the bridge's weights change, steps aside for a
bridge that carries hooks, and refuses a lower precision where it cannot serve."""

import pytest
import torch

import saelab
from saelab import hf_twin
from saelab import steering as st

PROMPTS = ["hello there", "a", "the cat sat on"]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module", params=["tiny-gemma3", "tiny-gpt2", "tiny-llama"])
def bridge(request):
    return saelab.load_model(request.param)


def _ids(model, text="the cat sat on the mat"):
    return torch.tensor([model.tokenizer(text)["input_ids"]])


def test_twin_logits_and_residual_streams_are_the_bridges(bridge):
    ids = _ids(bridge)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    logits, cache = bridge.run_with_cache(ids, names_filter=lambda n: n in hooks)
    assert hf_twin.plain_route(bridge, hooks) is not None
    twin_logits, captured = hf_twin.forward_capturing(bridge, hooks, input_ids=ids)
    torch.testing.assert_close(twin_logits, logits, rtol=1e-5, atol=1e-5)
    for h in hooks:
        torch.testing.assert_close(captured[h], cache[h], rtol=1e-5, atol=1e-5)


def test_steered_generation_on_the_twin_matches_greedy_decoding_through_the_bridge(bridge, greedy_by_hand):
    """The reference decodes with no KV cache through the bridge's own Hugging Face model, steered by a plain
    PyTorch hook on the bridge's block; the twin route must give the same tokens, padding and cache included."""
    vectors = torch.randn(3, bridge.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 3
    hook = "blocks.0.hook_resid_post"
    assert hf_twin.plain_route(bridge, [hook]) is not None  # the route under test
    got = st.generate(bridge, PROMPTS, max_new_tokens=5, min_new_tokens=5, hook=hook, vectors=vectors)
    want = [greedy_by_hand(bridge, p, vectors[i], 5) for i, p in enumerate(PROMPTS)]
    assert [g.ids for g in got] == want


def test_a_bridge_with_hooks_attached_generates_through_its_hooks(bridge):
    hook = "blocks.0.hook_resid_post"
    plain = st.generate(bridge, PROMPTS, max_new_tokens=4, min_new_tokens=4)
    with bridge.hooks(fwd_hooks=[(hook, lambda activation, hook: activation * 0)]):
        assert hf_twin.plain_route(bridge, []) is None
        hooked = st.generate(bridge, PROMPTS, max_new_tokens=4, min_new_tokens=4)
    assert [g.ids for g in hooked] != [g.ids for g in plain]
    assert hf_twin.plain_route(bridge, []) is not None  # the hook is gone again


def test_twin_follows_an_edit_of_the_bridges_weights():
    model = saelab.load_model("tiny-gemma3")
    ids = _ids(model)
    before = hf_twin.twin(model)
    assert hf_twin.twin(model) is before  # reused while nothing changes
    param = next(p for n, p in model.named_parameters() if "mlp" in n)
    param.mul_(3.0)
    after = hf_twin.twin(model)
    assert after is not before
    torch.testing.assert_close(after(ids).logits, model(ids), rtol=1e-5, atol=1e-5)


def test_bfloat16_twin_is_close_to_float32_and_only_where_it_can_serve(bridge):
    ids = _ids(bridge)
    full, _ = hf_twin.forward_capturing(bridge, [], input_ids=ids)
    half, _ = hf_twin.forward_capturing(bridge, [], "bfloat16", input_ids=ids)
    assert half.dtype == torch.bfloat16
    assert torch.nn.functional.cosine_similarity(half.float().flatten(), full.flatten(), dim=0) > 0.99
    out = st.generate(bridge, PROMPTS, max_new_tokens=3, forward_dtype="bfloat16")
    assert len(out) == 3 and all(isinstance(g.ids, list) for g in out)
    other = "blocks.0.hook_mlp_out" if "blocks.0.hook_mlp_out" in bridge.hook_dict else "blocks.0.attn.hook_out"
    with pytest.raises(ValueError, match="residual streams"):
        st.generate(bridge, PROMPTS, hook=other, vectors=torch.zeros(bridge.cfg.d_model), forward_dtype="bfloat16")
    with pytest.raises(ValueError, match="forward_dtype='int8'"):
        st.generate(bridge, PROMPTS, forward_dtype="int8")


def test_twin_unembedding_gets_a_contiguous_input_when_only_the_last_positions_are_kept(bridge):
    # generation keeps the last position only (a non-contiguous slice); a bfloat16 linear layer on a CPU copies its
    # weight once per row for such an input (30 s and 5 GiB on Gemma 3 270M), so the twin makes it contiguous
    plain = hf_twin.twin(bridge, "bfloat16")
    seen = []
    handle = plain.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        logits = plain(input_ids=_ids(bridge).repeat(3, 1), logits_to_keep=1).logits  # a batch: a strided slice
    finally:
        handle.remove()
    assert logits.shape[1] == 1 and seen and all(x.is_contiguous() for x in seen)
