"""notebook 05: a WiC-like subset of saelab's WordNet pairs, and the pairs a notebook run scores.

WiC (Pilehvar and Camacho-Collados, 2019) pruned WordNet's fine-grained sense distinctions; saelab's
`wordnet-wic` pairs keep any two synsets of a word, 43% of them are adjectives or adverbs and the median context has
6 words. `wic_like` applies WiC-style pruning to them (nouns and verbs, contexts of 5+ words, different-sense pairs
only across lexicographer files); `choose_pairs` gives a notebook its pairs and which of them are WiC-like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from saelab.tasks import WiCPair, sense_inventory


def wic_like(pairs: Sequence[WiCPair], *, pos: Sequence[str] = ("noun", "verb"), min_words: int = 5,
             lexnames: dict[str, str] | None = None, balance: bool = True, seed: int = 0) -> list[WiCPair]:
    """The WiC-like subset of WordNet pairs: WiC's pruning of fine-grained senses, applied to saelab's pairs.

    Keeps the pairs whose part of speech is in `pos` (WiC and PS-Eval use nouns and verbs) and whose two contexts
    both have at least `min_words` words (whitespace-separated); a different-sense pair (label 0) is kept only when
    its two synsets belong to different lexicographer files (supersenses, e.g. noun.artifact vs noun.act), so
    near-identical senses such as point.n.08 "a V shape" / point.n.09 "a very small circular shape" drop out.
    `lexnames` maps a synset to its lexicographer file (default: `sense_inventory()`'s). With `balance`, the larger
    label is sampled down (seeded) within each part of speech, so same and different stay 50/50; input order is
    kept. Pairs without synsets (SuperGLUE WiC from the hub) cannot be pruned this way: a ValueError says so.
    """
    if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 1:
        raise ValueError(f"min_words must be a positive integer, got {min_words!r}.")
    pos = [pos] if isinstance(pos, str) else list(pos)
    if lexnames is None:
        lexnames = {s.synset: s.lexname for senses in sense_inventory().values() for s in senses}
    unknown = [p for p in pairs if p.label == 0 and (p.synset_1 not in lexnames or p.synset_2 not in lexnames)]
    if unknown:
        raise ValueError(f"{len(unknown)} different-sense pair(s) have no known synset lexicographer file (first: "
                         f"{unknown[0].word!r}, synsets {unknown[0].synset_1!r} / {unknown[0].synset_2!r}); the "
                         "WiC-like filter needs WordNet synsets, as load_task('wordnet-wic') gives them.")

    def keep(p: WiCPair) -> bool:
        long_enough = min(len(p.context_1.split()), len(p.context_2.split())) >= min_words
        coarse = p.label == 1 or lexnames[p.synset_1] != lexnames[p.synset_2]
        return p.pos in pos and long_enough and coarse

    kept = [i for i, p in enumerate(pairs) if keep(p)]
    if balance:
        rng, chosen = np.random.default_rng(seed), []
        for part in pos:
            by_label = [[i for i in kept if pairs[i].pos == part and pairs[i].label == lab] for lab in (0, 1)]
            n = min(map(len, by_label))
            chosen += [i for group in by_label for i in rng.permutation(group)[:n].tolist()]
        kept = sorted(chosen)
    return [pairs[i] for i in kept]


def choose_pairs(pairs: Sequence[WiCPair], n: int | None = None, *, seed: int = 0
                 ) -> tuple[list[WiCPair], set[WiCPair]]:
    """The pairs to score and the WiC-like ones among them (`wic_like`): (pairs, WiC-like set).

    With `n`, a sample balanced by label, half of it WiC-like when there are enough (so a smoke run has both sets).
    Pairs without WordNet synsets (SuperGLUE WiC from the hub, pruned by its authors already) are all WiC-like.
    """
    pairs = list(pairs)
    wic = set(wic_like(pairs)) if all(p.synset_1 and p.synset_2 for p in pairs) else set(pairs)
    if n is None or n >= len(pairs):
        return pairs, wic
    rng = np.random.default_rng(seed)
    chosen = []
    for part, share in ((wic, n // 2), (set(pairs) - wic, n - n // 2)):
        for label in (0, 1):
            group = [p for p in pairs if p in part and p.label == label]
            chosen += [group[i] for i in rng.permutation(len(group))[:share // 2]]
    order = {p: i for i, p in enumerate(pairs)}
    return sorted(set(chosen), key=order.get), wic


__all__ = ["choose_pairs", "wic_like"]
