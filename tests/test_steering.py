"""saelab.steering on the tiny random Gemma 3 bridge: the intervention and its hook point, batched steered
generation, the selection criteria against hand computations, the judge-free score's harmonic mean and AxBench
split, Kendall's tau-b, bad input, and that no hook survives an error."""

import math

import numpy as np
import pytest
import torch

from saelab import steering as st
from saelab import steering_eval as se
from saelab.latents import latent_records
from saelab.sae import SAE, SAEConfig

LAST = "blocks.1.hook_resid_post"  # the tiny model's last block: the final norm and unembedding come right after
MID = "blocks.0.hook_resid_post"
PROMPTS = ["hello there", "a", "the cat sat on"]


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference only in this module (the setting is restored afterwards, so other modules can train)."""
    with torch.no_grad():
        yield


def _sae(hook=LAST, d_sae=8, arch="relu", seed=0, d_in=64):
    return SAE(SAEConfig(d_in=d_in, d_sae=d_sae, architecture=arch, hook_name=hook), seed=seed)


def _no_hooks_left(model) -> bool:
    points = {id(p): p for p in model.hook_dict.values()}.values()
    return all(not p.fwd_hooks and not p._forward_hooks for p in points)


def _prompt_ids(model, prompt):
    return torch.tensor([model.tokenizer(prompt)["input_ids"]])


# ---- the hook point and the two generation paths -----------------------------------------------------------------


def test_sae_hook_is_the_decoder_layer_output(tiny):
    """blocks.L.hook_resid_post (where SAEs read and steering writes) is Hugging Face's hidden_states[L + 1]."""
    ids = _prompt_ids(tiny, "the cat sat")
    _, cache = tiny.run_with_cache(ids, names_filter=lambda n: n == MID)
    hidden = tiny.original_model(ids, output_hidden_states=True).hidden_states
    assert torch.equal(cache[MID], hidden[1])


def test_steered_logits_agree_between_paths(tiny):
    """The same steering through the bridge's forward, the HF path saelab generates with, and a plain PyTorch forward
    hook on the matching decoder layer (no TransformerLens hook at all) gives the same next-token logits."""
    vec = torch.randn(64) * 4
    ids = _prompt_ids(tiny, "the cat sat")
    with st.steer(tiny, MID, vec):
        bridge = tiny(ids)[0, -1]
    via_hf = st.next_token_logits(tiny, "the cat sat", hook=MID, vectors=vec)[0]

    def add(module, args, output):
        return (output[0] + vec,) + tuple(output[1:]) if isinstance(output, tuple) else output + vec

    handle = tiny.original_model.model.layers[0].register_forward_hook(add)
    try:
        torch_hook = tiny.original_model(ids).logits[0, -1]
    finally:
        handle.remove()
    plain = tiny(ids)[0, -1]
    assert not torch.allclose(bridge, plain, atol=1e-3)  # the vector does something
    torch.testing.assert_close(via_hf, bridge, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch_hook, bridge, rtol=1e-5, atol=1e-5)


def test_batched_cached_steered_generation_matches_one_by_one_recomputation(tiny, greedy_by_hand):
    """Left-padded batches with a KV cache and one vector per prompt generate exactly what each prompt generates
    alone with no cache: every generated token is steered, and padding changes nothing."""
    vectors = torch.randn(3, 64) * 3
    batched = st.generate(tiny, PROMPTS, max_new_tokens=6, hook=MID, vectors=vectors, min_new_tokens=6)
    layer0 = tiny.original_model.model.layers[0]  # the HF decoder layer itself: a reference outside the bridge
    by_hand = [greedy_by_hand(tiny, p, vectors[i], 6, layer0) for i, p in enumerate(PROMPTS)]
    assert [g.ids for g in batched] == by_hand
    plain = st.generate(tiny, PROMPTS, max_new_tokens=6, min_new_tokens=6)
    assert [g.ids for g in plain] != by_hand
    assert all(g.prompt == p and g.text == tiny.tokenizer.decode(g.ids) for g, p in zip(batched, PROMPTS))
    assert _no_hooks_left(tiny)


def test_cached_generation_matches_recomputation_without_steering(tiny, greedy_by_hand):
    """The root of the transformers 5.24 break: the KV cache must be filled through the bridge's attention, or every
    cached decoding step attends to itself alone (steered or not)."""
    zero = torch.zeros(64)
    cached = st.generate(tiny, PROMPTS, max_new_tokens=6, min_new_tokens=6)
    layer0 = tiny.original_model.model.layers[0]
    assert [g.ids for g in cached] == [greedy_by_hand(tiny, p, zero, 6, layer0) for p in PROMPTS]


def test_the_kv_cache_is_filled_for_every_layer(tiny):
    from transformers import DynamicCache

    ids = _prompt_ids(tiny, "the cat sat on")
    cache = DynamicCache(config=tiny.original_model.config)
    tiny.original_model(input_ids=ids, past_key_values=cache, use_cache=True)
    assert [cache.get_seq_length(layer) for layer in range(tiny.cfg.n_layers)] == [ids.shape[1]] * tiny.cfg.n_layers


def test_keep_kv_cache_is_idempotent_and_on_every_attention_layer(tiny):
    from saelab.models import keep_kv_cache

    assert keep_kv_cache(tiny) == 0  # load_model / tiny_model already added it once per attention layer
    flagged = [m for m in tiny.modules() if getattr(m, "_saelab_keeps_kv_cache", False)]
    assert len(flagged) == tiny.cfg.n_layers


def test_sampling_is_seeded_and_leaves_the_callers_random_state(tiny):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = st.generate(tiny, PROMPTS, max_new_tokens=5, do_sample=True, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = st.generate(tiny, PROMPTS, max_new_tokens=5, do_sample=True, seed=7)
    assert [g.ids for g in first] == [g.ids for g in again]


def test_steering_vectors_are_alpha_times_top_activation_times_decoder_row():
    sae = _sae()
    v = st.steering_vectors(sae, [1, 2], [3.0, -2.0], [5.0, 4.0])
    torch.testing.assert_close(v, torch.stack([15 * sae.W_dec[1], -8 * sae.W_dec[2]]))


# ---- selection criteria against hand computations ----------------------------------------------------------------


def _steered_logits_by_hand(model, prompt, vec):
    """Steering at the last block: final residual + vec, through the final norm and unembedding, by hand."""
    ids = _prompt_ids(model, prompt)
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n == LAST)
    hf = model.original_model
    return hf.lm_head(hf.model.norm(cache[LAST][0, -1] + vec)).double()


def _aligned_sae(model, token_ids, hook=LAST):
    """An SAE whose decoder rows are the unembedding rows of `token_ids` (tied embeddings)."""
    sae = _sae(hook=hook, d_sae=len(token_ids))
    sae.W_dec.data = model.original_model.lm_head.weight[token_ids].clone()
    return sae


def test_output_score_by_hand(tiny):
    token_ids = [70, 100, 150]
    sae = _aligned_sae(tiny, token_ids)
    max_acts = [200.0, 0.5, 0.05]  # latent 0 amplified far above the residual stream's own norm
    scores = st.output_score(tiny, sae, [0, 1, 2], max_acts, prompt="the cat", alpha=10)
    hf = tiny.original_model
    for j in range(3):
        probs = torch.softmax(_steered_logits_by_hand(tiny, "the cat", 10 * max_acts[j] * sae.W_dec[j]), -1)
        lens = hf.lm_head(hf.model.norm(sae.W_dec[j])).topk(20).indices.tolist()
        best = None
        for t in lens:  # the lens token ranked best under steering, rank counted by hand
            rank = int((probs > probs[t]).sum())
            if best is None or rank < best[0]:
                best = (rank, float(probs[t]))
        expected = (1 - best[0] / len(probs)) * best[1]
        assert float(scores[j]) == pytest.approx(expected, rel=1e-4, abs=1e-7)
    # a strongly amplified aligned latent makes its own token the top prediction: rank 0, score = its probability
    probs0 = torch.softmax(_steered_logits_by_hand(tiny, "the cat", 2000 * sae.W_dec[0]), -1)
    assert int(probs0.argmax()) == token_ids[0]
    assert float(scores[0]) == pytest.approx(float(probs0.max()), rel=1e-4)
    assert float(scores[0]) > float(scores[2])


def test_delta_token_confidence_by_hand(tiny):
    sae = _aligned_sae(tiny, [70, 100])
    max_acts = [2.0, 0.3]
    plain = torch.log_softmax(tiny.original_model(_prompt_ids(tiny, "the cat")).logits[0, -1].double(), -1)
    for k in (1, 3):
        got = st.delta_token_confidence(tiny, sae, [0, 1], max_acts, k=k, prompt="the cat", alpha=10)
        for j in range(2):
            steered = torch.log_softmax(_steered_logits_by_hand(tiny, "the cat", 10 * max_acts[j] * sae.W_dec[j]), -1)
            c_steered = -sum(sorted(steered.tolist(), reverse=True)[:k]) / k
            c_plain = -sum(sorted(plain.tolist(), reverse=True)[:k]) / k
            assert float(got[j]) == pytest.approx(c_steered - c_plain, rel=1e-4, abs=1e-5)
    # amplifying an aligned latent strongly makes the model sure of one token: confidence rises, Delta C < 0
    assert float(st.delta_token_confidence(tiny, sae, [0], [200.0])[0]) < 0
    both = st.selection_scores(tiny, sae, [0, 1], max_acts, prompt="the cat")
    torch.testing.assert_close(both["delta_token_confidence"],
                               st.delta_token_confidence(tiny, sae, [0, 1], max_acts, prompt="the cat"))
    torch.testing.assert_close(both["output_score"], st.output_score(tiny, sae, [0, 1], max_acts, prompt="the cat"))


def test_token_confidence_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert float(st.token_confidence(logits, 1)[0]) == pytest.approx(-math.log(0.5))
    assert float(st.token_confidence(logits, 2)[0]) == pytest.approx(-(math.log(0.5) + math.log(0.3)) / 2)


def test_input_score_by_hand(tiny):
    """Two latents that fire only on the byte 'a' (read at the embedding); one writes towards 'a' (its top-20
    logit-lens tokens contain 'a': input score 1), the other towards a token whose lens excludes 'a' (score 0)."""
    tok = tiny.tokenizer
    a = tok.convert_tokens_to_ids("a")
    hf = tiny.original_model
    embed = hf.model.embed_tokens(torch.arange(hf.config.vocab_size)[None])[0]  # what hook_embed sees per token
    direction = embed[a] / embed[a].norm()
    pre = embed @ direction
    others = torch.cat([pre[:a], pre[a + 1:]])
    assert pre[a] > others.max()  # 'a' is the only token this encoder direction picks out
    def lens_top(t):
        return set(hf.lm_head(hf.model.norm(hf.lm_head.weight[t])).topk(20).indices.tolist())
    b = next(t for t in range(4, 200) if a not in lens_top(t))
    assert a in lens_top(a)
    sae = _sae(hook="hook_embed", d_sae=2, arch="jumprelu", d_in=64)
    sae.W_enc.data[:] = direction[:, None]
    sae.b_enc.data.zero_()
    sae.b_dec.data.zero_()
    sae.threshold.data[:] = float(others.max() + pre[a]) / 2
    sae.W_dec.data = hf.lm_head.weight[[a, b]].clone()
    texts = ["a banana and a cat", "abracadabra", "no such letter here? yes: a"]
    records = latent_records(tiny, sae, texts, progress=False)
    assert records.fire_count.tolist() == [sum(t.count("a") for t in texts)] * 2
    assert st.input_score(tiny, sae, [0, 1], records).tolist() == [1.0, 0.0]
    freq = st.activation_frequency(tiny, sae, [0, 1], records)
    assert float(freq[0]) == pytest.approx(records.fire_count[0].item() / records.n_tokens)


def test_select_latents_top_and_tails():
    latents = [10, 11, 12, 13, 14, 15]
    scores = torch.tensor([0.1, -0.9, 0.5, float("nan"), -0.2, 0.7])
    assert st.select_latents(latents, scores, 2) == [15, 12]
    assert st.select_latents(latents, scores, 3, mode="tails") == [15, 12, 11]
    assert st.select_latents(latents, torch.tensor([1.0, 2, 3, 4, 5, 6]), 2, mode="tails") == [15, 14]
    assert len(st.random_score(None, _sae(), [0, 1, 2], seed=3)) == 3


# ---- the steering score: harmonic mean, the AxBench split, a deterministic judge ------------------------------------


def test_harmonic_mean_is_zero_guarded():
    assert se.harmonic_mean([1.0, 0.5, 0.25]) == pytest.approx(3 / 7)
    assert se.harmonic_mean([0.5, 0.0, 1.0]) == 0.0
    assert se.steering_score({"concept": 1.0, "fluency": 1.0, "relevance": 1.0}) == 1.0
    with pytest.raises(ValueError, match="lack"):
        se.steering_score({"concept": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        se.harmonic_mean([float("nan"), 1.0])


def test_split_prompts_halves():
    select, held = se.split_prompts(7, seed=1)
    assert sorted(select + held) == list(range(7)) and len(select) == 4 and not set(select) & set(held)
    assert se.split_prompts(7, seed=1) == (select, held)
    with pytest.raises(ValueError, match="at least 2"):
        se.split_prompts(1)


def test_evaluate_steering_chooses_alpha_on_one_half_and_scores_the_other(tiny):
    prompts = ["one", "two", "three", "four"]
    select, held = se.split_prompts(len(prompts), seed=0)
    seen = []

    def judge(cases):
        seen.append(sorted({prompts.index(c.prompt) for c in cases}))
        out = []
        for c in cases:
            concept = c.alpha / 10 * (0.5 if prompts.index(c.prompt) in held else 1.0)
            fluency = 0.0 if (c.latent == 1 and c.alpha >= 10) else 1 - c.alpha / 20
            out.append({"concept": concept, "fluency": fluency, "relevance": 1.0})
        return out

    sae = _sae(hook=MID)
    targets = [se.SteeringTarget(sae, 0, 1.0, label="A", group="g"), se.SteeringTarget(sae, 1, 1.0, label="B"),
               se.SteeringTarget(sae, 0, 1.0, label="A again", group="h")]
    results = se.evaluate_steering(tiny, targets, prompts, [2.0, 5.0, 10.0], judge, max_new_tokens=3,
                                   progress=False)
    assert seen == [select, held]  # alpha chosen on one half, scored on the other
    # latent 0 at alphas 2 / 5 / 10 on the choosing half: H(0.2, 0.9, 1), H(0.5, 0.75, 1), H(1, 0.5, 1)
    assert results[0]["selection_scores"] == pytest.approx({2.0: 3 / (5 + 1 / 0.9 + 1), 5.0: 3 / (2 + 4 / 3 + 1),
                                                            10.0: 0.75})
    assert results[0]["alpha"] == 10.0 and results[0]["score"] == pytest.approx(3 / (2 + 2 + 1))
    # latent 1 fails fluency at alpha 10 (score 0 there), so alpha 5 wins; held out: H(0.25, 0.75, 1)
    assert results[1]["selection_scores"][10.0] == 0.0
    assert results[1]["alpha"] == 5.0 and results[1]["score"] == pytest.approx(3 / (4 + 4 / 3 + 1))
    assert results[2]["score"] == results[0]["score"] and results[2]["group"] == "h"  # evaluated once, reported twice
    assert results[0]["concept"] == pytest.approx(0.5) and results[0]["label"] == "A"
    assert _no_hooks_left(tiny)


def test_judge_free_judge_matches_an_unpadded_recomputation(tiny):
    sae = _sae(hook=MID, d_sae=16)
    plain = st.generate(tiny, PROMPTS, max_new_tokens=5, min_new_tokens=5)
    steered = st.generate(tiny, PROMPTS, max_new_tokens=5, min_new_tokens=5, hook=MID,
                          vectors=st.steering_vectors(sae, [3] * 3, [4.0] * 3, [1.0] * 3))
    cases = [se.SteeringCase(p, s, u, sae, 3, 4.0, ["some context", "another one"])
             for p, s, u in zip(PROMPTS, steered, plain)]
    judge = se.JudgeFreeJudge(tiny, batch_size=2)
    ratings = judge(cases)
    for case, rating in zip(cases, ratings):
        ids = torch.tensor([case.steered.prompt_ids + case.steered.ids])
        logits, cache = tiny.run_with_cache(ids, names_filter=lambda n: n == MID)
        n_prompt = len(case.steered.prompt_ids)
        lp = torch.log_softmax(logits[0, n_prompt - 1:-1].double(), -1)
        nll = -lp.gather(1, ids[0, n_prompt:, None]).mean()
        assert rating["perplexity"] == pytest.approx(math.exp(float(nll)), rel=1e-3)
        fires = (sae.encode(cache[MID][0, n_prompt:])[:, 3] > 0).float().mean()
        assert rating["fire_share"] == pytest.approx(float(fires))
        assert rating["repetition"] == se.repetition_rate(case.steered.ids)
        for name in se.RATINGS:
            assert 0.0 <= rating[name] <= 1.0
        assert rating["fluency"] == pytest.approx(judge.perplexity_part(rating["perplexity"])
                                                  * (1 - rating["repetition"]))
    a, b = se.sentence_embeddings([cases[0].prompt + cases[0].steered.text, cases[0].prompt + cases[0].unsteered.text])
    assert ratings[0]["relevance"] == pytest.approx(min(1.0, max(0.0, float(a @ b))), abs=1e-5)
    strict = se.JudgeFreeJudge(tiny, with_prompt=False)(cases[:1])[0]
    a, b = se.sentence_embeddings([cases[0].steered.text, cases[0].unsteered.text])
    assert strict["relevance"] == pytest.approx(min(1.0, max(0.0, float(a @ b))), abs=1e-5)
    assert judge.perplexity_part(5.0) == 1.0 and judge.perplexity_part(2000.0) == 0.0
    assert judge.perplexity_part(100.0) == pytest.approx(0.5)


def test_repetition_rate_by_hand():
    assert se.repetition_rate([1, 2, 3, 4, 5]) == 0.0
    assert se.repetition_rate([7, 7, 7, 7, 7], n=3) == pytest.approx(1 - 1 / 3)
    assert se.repetition_rate([1, 2], n=3) == 0.0


# ---- rank agreement -------------------------------------------------------------------------------------------------


def test_kendall_tau_b_by_hand():
    # 10 pairs, 2 discordant ((2,3) and (4,5)): tau = (8 - 2) / 10
    result = se.kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=500, seed=0)
    assert result["tau"] == pytest.approx(0.6) and result["n"] == 5
    assert -1 <= result["low"] <= result["tau"] <= result["high"] <= 1
    assert se.kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=500, seed=0) == result
    # with ties, tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)): x has one tied pair, so (9 - 0) / sqrt(9 * 10)
    assert se.kendall_tau([1, 1, 2, 3, 4], [1, 2, 3, 4, 5], n_boot=10)["tau"] == pytest.approx(9 / math.sqrt(90))
    with pytest.raises(ValueError, match="at least 3"):
        se.kendall_tau([1, 2], [2, 1])


def test_kendall_tau_b_vectorised_matches_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (30, 9)).astype(float), rng.integers(0, 4, (30, 9)).astype(float)  # many ties
    for got, a, b in zip(se.kendall_tau_b(x, y), x, y):
        assert got == pytest.approx(kendalltau(a, b, variant="b").statistic, nan_ok=True)
    assert math.isnan(se.kendall_tau_b(np.ones(5), np.arange(5.0)))
    assert se.kendall_tau_b(x.T, y.T, axis=0) == pytest.approx(se.kendall_tau_b(x, y), nan_ok=True)
    with pytest.warns(DeprecationWarning, match="level"):
        old = se.kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=200, confidence=0.8)
    narrow = se.kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=200, level=0.8)
    wide = se.kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4], n_boot=200)
    assert old == narrow and narrow["high"] - narrow["low"] <= wide["high"] - wide["low"]


# ---- bad input, and no stray hooks after an error -----------------------------------------------------------------


def test_bad_input_gives_clear_errors_and_leaves_no_hooks(tiny):
    sae = _sae(hook=MID)
    for alpha in (float("nan"), float("inf"), "strong"):
        with pytest.raises(ValueError, match="alpha"):
            st.steering_vectors(sae, [0], alpha, [1.0])
        with pytest.raises(ValueError, match="alpha"):
            st.output_score(tiny, sae, [0], [1.0], alpha=alpha)
    with pytest.raises(ValueError, match="does not exist.*8 latents"):
        st.delta_token_confidence(tiny, sae, [8], [1.0])
    with pytest.raises(ValueError, match="does not exist"):
        st.steering_vectors(sae, [-1], 1.0, [1.0])
    elsewhere = _sae(hook="blocks.7.hook_resid_post")
    with pytest.raises(ValueError, match="not a hook of this model.*2 blocks"):
        st.output_score(tiny, elsewhere, [0], [1.0])
    with pytest.raises(ValueError, match="not a hook"), st.steer(tiny, "blocks.0.hook_nonsense", torch.zeros(64)):
        pass
    with pytest.raises(ValueError, match="empty"):
        st.generate(tiny, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        st.generate(tiny, ["fine", "  "], max_new_tokens=2)
    with pytest.raises(TypeError, match="list of strings"):
        st.generate(tiny, "a prompt", max_new_tokens=2)
    with pytest.raises(ValueError, match="shape"), st.steer(tiny, MID, torch.zeros(63)):
        pass
    with pytest.raises(ValueError, match="2 steering vectors for 3 prompts"):
        st.generate(tiny, PROMPTS, hook=MID, vectors=torch.zeros(2, 64), max_new_tokens=2)
    assert _no_hooks_left(tiny)


def test_no_stray_hooks_after_an_error_inside_steering(tiny):
    ids = _prompt_ids(tiny, "the cat")
    plain = tiny(ids)
    with pytest.raises(RuntimeError, match="boom"), st.steer(tiny, MID, torch.ones(64)):
        assert not _no_hooks_left(tiny)
        raise RuntimeError("boom")
    assert _no_hooks_left(tiny)
    # raised inside the hook itself, in the middle of a forward pass
    with pytest.raises(ValueError, match="3 steering vectors for a batch of 1"), st.steer(tiny, MID, torch.ones(3, 64)):
        tiny(ids)
    assert _no_hooks_left(tiny)
    torch.testing.assert_close(tiny(ids), plain)  # the model is back to normal


# ---- the playground widget ------------------------------------------------------------------------------------------


def test_steering_playground_shows_both_continuations_and_readable_errors(tiny):
    pytest.importorskip("ipywidgets")
    from saelab.widgets.steering import steering_playground

    sae = _sae(hook=MID, d_sae=16)
    max_acts = torch.full((16,), 2.0)
    max_acts[5] = 0.0
    play = steering_playground(tiny, sae, max_acts, latent=3, alpha=4.0, prompt="the cat", max_new_tokens=8)
    assert play.generate()
    plain, steered = play.last
    assert plain.ids == st.generate(tiny, ["the cat"], max_new_tokens=8)[0].ids
    vec = st.steering_vectors(sae, [3], 4.0, [2.0])
    assert steered.ids == st.generate(tiny, ["the cat"], max_new_tokens=8, hook=MID, vectors=vec)[0].ids
    assert "steered (latent 3, alpha 4)" in play.result.value and "unsteered" in play.result.value
    before = play.result.value
    for kwargs, message in [({"prompt": "   "}, "prompt is empty"), ({"latent": 99}, "does not exist"),
                            ({"latent": 3, "alpha": "nan"}, "finite"), ({"alpha": "inf"}, "finite"),
                            ({"alpha": "strong"}, "must be a number"), ({"alpha": 1, "latent": 5}, "never fired")]:
        if "prompt" not in kwargs:
            play.prompt.value = "the cat"
        assert not play.generate(**kwargs)
        assert message in play.status.last_error
        assert "saelab-error" in play.status.message._dom_classes
        assert play.result.value == before  # the last good result stays
    assert play.generate(latent=2, alpha="-3")
    assert "latent 2, alpha -3" in play.result.value
    assert not play.status.busy_now
    assert _no_hooks_left(tiny)
