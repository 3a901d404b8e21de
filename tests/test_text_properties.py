"""Property-based tests (hypothesis) of the text paths: `extract` with each pooling, the position selectors
(`last_occurrence`, and PS-Eval's read positions from `prepare_pairs` / `extract_probe`).

Inputs: any unicode (emoji, combining marks, right-to-left scripts, control characters), empty and
whitespace-only strings, texts of thousands of characters (cut to `max_length` tokens), and target words that do
not occur. The property everywhere: a legitimately bad input (a blank text, a word that is not there) raises a
ValueError that names it; anything else gives rows, lengths and positions that agree with the tokenizer and finite
vectors. Never an internal error (IndexError, a RuntimeError from torch, ...).

The tiny model's tokenizer is byte-level: one token per UTF-8 byte, plus BOS at position 0.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from saelab import polysemy as ps
from saelab.activations import POOLINGS, TextTokens, extract, last_occurrence
from saelab.tasks import WiCPair

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.0.hook_resid_post"
# derandomized, so a run is reproducible; SAELAB_HYPOTHESIS_EXAMPLES=500 (say) explores much further
EXAMPLES = int(os.environ.get("SAELAB_HYPOTHESIS_EXAMPLES", "30"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ODD = ["😀👍🏽 a family 👨‍👩‍👧 here", "cafe\u0301 de\u0301ja\u0300", "שלום עולם", "مرحبا بالعالم", "zero\u200bwidth",
       "\u202eright to left\u202c", "tab\tnew\nline\r\n", "NUL\x00byte", "x", "Ǆ ǅ ǆ İ ß"]
WORDS = ["bank", "😀", "e\u0301", "עולם", "a.b", "(x)", "C++", "İ", "ß"]

blank = st.text(alphabet=" \t\n\r\u3000\u00a0", max_size=4)  # "" included
short = st.one_of(st.text(max_size=30), st.sampled_from(ODD))
long = st.text(min_size=1, max_size=12).map(lambda t: (t + " ") * 400)  # thousands of characters
# PS-Eval prompts are never cut, so every token of a long context runs through the model: keep them to ~1,000
# characters of at most 2 bytes each
long_context = st.text(alphabet=st.characters(max_codepoint=0x7FF), min_size=1, max_size=8).map(
    lambda t: (t + " ") * 120)
words = st.one_of(st.sampled_from(WORDS), st.characters().filter(str.strip),
                  st.text(min_size=1, max_size=6).filter(str.strip))


def token_ids(tokenizer, text: str, max_length: int) -> list[int]:
    return tokenizer(text)["input_ids"][:max_length]


def whole_word(word: str):
    """The selectors' rule: the word, case-insensitive, not inside a longer word."""
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", flags=re.IGNORECASE)


# ------------------------------------------------------------------------------------------------------------------
# extract and its poolings
# ------------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(batch=st.lists(st.one_of(short, long), min_size=1, max_size=4),
       extra=st.one_of(st.none(), st.none(), st.none(), blank),  # now and then, a blank text among them
       pooling=st.sampled_from(POOLINGS), max_length=st.sampled_from([1, 2, 16, 512]), include_bos=st.booleans())
def test_extract_rows_agree_with_the_tokenizer(tiny, batch, extra, pooling, max_length, include_bos):
    if extra is not None:  # (short texts can be blank too)
        batch = [*batch[:1], extra, *batch[1:]]
    run = dict(pooling=pooling, max_length=max_length, include_bos=include_bos, batch_size=3, progress=False)
    bad = [i for i, t in enumerate(batch) if not t.strip()]
    if bad:  # a blank text is refused, by index and content
        event("blank text refused")
        with pytest.raises(ValueError) as err:
            extract(tiny, batch, HOOK, **run)
        assert f"index {bad[0]}: {batch[bad[0]]!r}" in str(err.value) and "drop or fix" in str(err.value)
        return
    ids = [token_ids(tiny.tokenizer, t, max_length) for t in batch]
    kept = [i if include_bos else i[1:] for i in ids]  # BOS is position 0
    empty = [n for n, k in enumerate(kept) if not k]
    if empty:  # max_length=1 leaves only BOS: nothing to pool
        event("only BOS left")
        with pytest.raises(ValueError) as err:
            extract(tiny, batch, HOOK, **run)
        assert f"Text {empty[0]} has no token" in str(err.value) and "max_length=1" in str(err.value)
        return
    acts = extract(tiny, batch, HOOK, **run)
    event(f"extracted, {'some' if acts.meta['n_truncated'] else 'none'} truncated")
    assert acts.lengths.tolist() == [len(k) for k in kept]
    assert acts.meta["n_truncated"] == sum(len(tiny.tokenizer(t)["input_ids"]) > max_length for t in batch)
    x = acts.tensor
    if pooling == "none":
        assert x.shape == (sum(len(k) for k in kept), tiny.cfg.d_model)
        assert acts.token_ids.tolist() == [t for k in kept for t in k]
    else:
        assert x.shape == (len(batch), tiny.cfg.d_model)
    assert torch.isfinite(x).all()


# ------------------------------------------------------------------------------------------------------------------
# last_occurrence: the last whole-word occurrence the model sees
# ------------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(text=st.one_of(short, long), word=words, plant=st.sampled_from(["nowhere", "end", "start and end"]),
       max_length=st.sampled_from([8, 64, 512]))
def test_last_occurrence_selects_the_last_visible_occurrence(tiny, text, word, plant, max_length):
    if not text.strip():
        text = "plain"
    if plant != "nowhere":  # at the end, a long text's copy is cut off by max_length: an earlier one must count
        text = f"{text} {word} tail" if plant == "end" else f"{word} {text} {word} tail"
    encoded = tiny.tokenizer(text, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]
    offsets = [tuple(o) for o in encoded["offset_mapping"][: len(ids)]]
    seen = max(b for _, b in offsets)  # characters the model sees after truncation
    visible = [m for m in whole_word(word).finditer(text) if m.end() <= seen]
    chosen = last_occurrence(word)(TextTokens(0, text, ids, offsets))
    last_cut = bool(visible) and visible[-1].end() != max(m.end() for m in whole_word(word).finditer(text))
    event("an earlier copy read (the last one cut off)" if last_cut else "visible" if visible else "word not seen")
    if visible:
        (p,) = chosen
        start, end = visible[-1].span()
        assert 0 < p < len(ids) and offsets[p][0] < end and offsets[p][1] > start
        assert all(offsets[q][0] >= end or offsets[q][1] <= start or q <= p for q in range(len(ids)))
    else:
        assert chosen == []
    # the same through extract: one row when the word is visible, else a ValueError naming the text
    run = dict(pooling="none", positions=last_occurrence([word]), max_length=max_length, progress=False)
    if visible:
        acts = extract(tiny, [text], HOOK, **run)
        assert acts.lengths.tolist() == [1] and acts.token_ids.tolist() == [ids[chosen[0]]]
    else:
        with pytest.raises(ValueError) as err:
            extract(tiny, [text], HOOK, **run)
        assert "found no position in text 0" in str(err.value) and "allow_missing=True" in str(err.value)
        gaps = extract(tiny, [text], HOOK, **{**run, "pooling": "mean"}, allow_missing=True)
        assert gaps.meta["missing"] == [0] and torch.isnan(gaps.tensor).all()


@SETTINGS
@given(word=st.one_of(blank, st.just(None), st.integers()))
def test_last_occurrence_refuses_a_word_that_is_no_word(word):
    expected = ValueError if isinstance(word, str) else TypeError
    with pytest.raises(expected) as err:
        last_occurrence(word)
    assert repr(word) in str(err.value) and "give the word to find" in str(err.value)


# ------------------------------------------------------------------------------------------------------------------
# PS-Eval's prompts and read positions
# ------------------------------------------------------------------------------------------------------------------

REASONS = {"empty target word", "target absent from context 1", "target absent from context 2",
           "multi-token target", "target not found as a token in the prompt"}


@st.composite
def wic_pairs(draw):
    word = draw(st.one_of(words, blank))
    contexts = []
    for _ in range(2):
        context = draw(st.one_of(short, long_context, blank))
        if draw(st.sampled_from([True, True, True, False])):  # mostly the word is really there
            context = f"{context} {word} end"
        contexts.append(context)
    span = draw(st.one_of(st.none(), st.tuples(st.integers(-3, 40), st.integers(-3, 40))))
    return WiCPair(word=word, pos="", context_1=contexts[0], context_2=contexts[1],
                   label=draw(st.sampled_from([0, 1])), span_1=span)


@SETTINGS
@given(pairs=st.lists(wic_pairs(), min_size=1, max_size=3), multi_token=st.sampled_from(ps.MULTI_TOKEN))
def test_prepare_pairs_positions_cover_the_word(tiny, pairs, multi_token):
    tokenizer = tiny.tokenizer
    probe = ps.prepare_pairs(pairs, tokenizer, multi_token=multi_token)
    assert len(probe) + len(probe.skipped) == len(pairs) == probe.n_input
    assert {s.reason for s in probe.skipped} <= REASONS
    event(f"{len(probe)} pair(s) kept")
    for skip in probe.skipped:
        pair = pairs[skip.index]
        if not pair.word.strip():
            assert skip.reason == "empty target word"
        elif skip.reason.startswith("target absent from context"):
            c = int(skip.reason[-1])
            context, span = (pair.context_1, pair.span_1) if c == 1 else (pair.context_2, pair.span_2)
            assert not whole_word(pair.word.strip()).search(context)
            assert span is None or not 0 <= span[0] < span[1] <= len(context)
    assert len(probe.prompts) == 2 * len(probe) == len(probe.positions)
    for n, pair in enumerate(probe.pairs):
        word = pair.word.strip()
        for c, (context, span) in enumerate([(pair.context_1, pair.span_1), (pair.context_2, pair.span_2)]):
            prompt, context_start, word_start = ps.render_prompt(ps.TEMPLATE, context, word)
            assert probe.prompts[2 * n + c] == prompt
            encoded = tokenizer(prompt, return_offsets_mapping=True)
            ctx, tmpl = probe.positions[2 * n + c]
            assert 0 < ctx < len(encoded["input_ids"]) and 0 < tmpl < len(encoded["input_ids"])
            if span is None or not 0 <= span[0] < span[1] <= len(context):  # no valid span given: the first match
                span = ps.find_word(context, word)
            a, b = encoded["offset_mapping"][ctx]
            assert a < context_start + span[1] and b > context_start + span[0]  # the context's copy of the word
            a, b = encoded["offset_mapping"][tmpl]
            assert a < word_start + len(word) and b > word_start  # the template's copy
            covering = [i for i, (x, y) in enumerate(encoded["offset_mapping"])
                        if y > x and x < word_start + len(word) and y > word_start]
            assert tmpl == covering[-1] and (multi_token == "last" or len(covering) == 1)
    if len(probe):  # and the model reads exactly those two positions of every prompt, however long
        acts = ps.extract_probe(tiny, probe, HOOK, cache=False, progress=False)
        x = acts.acts[HOOK]
        assert x.shape == (len(probe), 2, 2, tiny.cfg.d_model) and torch.isfinite(x).all()
    else:
        with pytest.raises(ValueError, match="No pair is left to evaluate"):
            ps.extract_probe(tiny, probe, HOOK, cache=False, progress=False)
