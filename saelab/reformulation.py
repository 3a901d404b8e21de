"""notebook 07: prompt reformulation from SAE evidence: read how the model takes a word, annotate the prompt.

A word-sense analogue of Wang et al. (arXiv 2507.06427): read from the SAE where the model misreads its input,
rewrite the prompt with an annotation, run the task again. The task: supersense classification of WordNet sentences,
where the label hinges on how one noun is read.

    items, names = topic_items(n=200)                                   # sentences, target noun, its senses
    run = read_prompts(model, [item_prompt(model, it) for it in items], hook)   # the word's activation + logits
    protos = prototypes(model, items, hook)                   # each sense's activation in its gloss and examples
    mine = nearest_sense(sae.encode(run.acts), protos.encoded(sae), items, protos)   # the model's reading
    flagged = disagreement(mine, external_reading(items), items) > 0    # vs the sentence encoder's reading

Neither reading sees the test sentence's label or gold sense (the test sentence is left out of the prototypes).
Policies, controls and verdicts: `saelab.reformulation_eval`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from saelab.activations import extract
from saelab.concept_metrics import encode_sentences
from saelab.io import sha256_text
from saelab.polysemy import covering, render_prompt
from saelab.probing import label_logits, label_token_ids
from saelab.tasks import Sense, sense_inventory, stratified_sample, topic_targets

FILLER_WORDS = ("that", "is", "to", "say", "as", "it", "is", "written", "here", "in", "this", "very", "sentence")


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes a prompt: a template with one {context} and one {target_word}, the label words scored
    as the next token (`prefix` + word, first token), and whether to wrap it in the tokenizer's chat template."""

    template: str
    label_words: tuple[str, ...]
    prefix: str = " "
    chat: bool = False


#: supersense classification on a base model: completion-style, one label word per class (sorted class names)
TOPIC_FORMAT = PromptFormat('Sentence: {context}\nIn this sentence, the word "{target_word}" names a kind of',
                            ("object", "message", "place", "person", "time"))
#: the same question for an instruction-tuned model, in its chat template; the answer's first token is scored
TOPIC_CHAT_FORMAT = PromptFormat(
    'Sentence: {context}\nIn this sentence, is the word "{target_word}" an object, a message, a place, a person or '
    "a time? Answer with one word.", ("Object", "Message", "Place", "Person", "Time"), prefix="", chat=True)
#: reading a word's sense where no task prompt exists (WiC contexts): PS-Eval's probe, with the word quoted
READ_FORMAT = PromptFormat('Sentence: {context}\nHere, "{target_word}" means', ("a", "b"))
#: the second task: Word-in-Context judgments (label 0 different sense, 1 same sense)
WIC_FORMAT = PromptFormat('Sentence 1: {context_1}\nSentence 2: {context_2}\nQuestion: Is "{target_word}" used '
                          "with the same meaning in both sentences?\nAnswer:", ("no", "yes"))
#: the negative control: tweet sentiment (the word is read where it stands: no {target_word})
TWEET_FORMAT = PromptFormat("Tweet: {context}\nSentiment (negative, neutral or positive):",
                            ("negative", "neutral", "positive"))


@dataclass(frozen=True)
class SenseItem:
    """A sentence with one target word, the word's candidate senses and (for evaluation only) its gold sense."""

    text: str
    word: str  # the target as written in `text`
    span: tuple[int, int]  # text[span[0]:span[1]] == word
    lemma: str  # WordNet lemma ("camp", "political_prisoner")
    pos: str  # "noun", "verb", "adj", "adv"
    senses: tuple[Sense, ...]  # candidate senses, most frequent first (at most `max_senses`)
    synset: str = ""  # the gold synset (never used to read or annotate)
    gold_gloss: str = ""  # its gloss: the oracle annotation
    label: int = -1  # class id of the task, -1 when none

    @property
    def gold(self) -> int:
        """Index of the gold sense among `senses`; -1 when it is not a candidate (beyond `max_senses`)."""
        return next((j for j, s in enumerate(self.senses) if s.synset == self.synset), -1)


def _check_items(items: Sequence[SenseItem]) -> list[SenseItem]:
    items = list(items)
    if not items:
        raise ValueError("no items: give at least one SenseItem (see reformulation.topic_items)")
    for i, it in enumerate(items):
        if it.text[it.span[0]:it.span[1]] != it.word or not it.senses:
            raise ValueError(f"item {i}: span {it.span} of {it.text!r} must hold the word {it.word!r}, and "
                             f"{it.lemma!r} needs candidate senses ({len(it.senses)} given)")
    return items


def topic_items(n: int | None = None, *, seed: int = 0, max_senses: int = 8,
                ambiguous: bool = True) -> tuple[list[SenseItem], list[str]]:
    """`wordnet-topics` sentences with their target noun and its senses, and the class names (label ids index them).

    ambiguous: keep only sentences whose noun's candidate senses span two supersenses or more, so that how the
    noun is read can change the label. n: a stratified, seeded sample of that many (None: all).
    """
    inventory = sense_inventory()
    items = []
    for text, t in topic_targets().items():
        senses = inventory[(t["lemma"], "noun")]
        gold = next(s for s in senses if s.synset == t["synset"])
        senses = senses[:max_senses]
        if len(senses) < 2 or (ambiguous and len({s.lexname for s in senses}) < 2):
            continue
        items.append(SenseItem(text, t["word"], t["span"], t["lemma"], "noun", senses, t["synset"], gold.gloss,
                               t["label"]))
    names = sorted({it.label for it in items})
    items = [replace(it, label=names.index(it.label)) for it in items]
    keep = stratified_sample(np.array([it.label for it in items]), n, seed, "topic items", names)
    return [items[i] for i in keep], names


# ------------------------------------------------------------------------------------------------------------------
# Annotation and prompts
# ------------------------------------------------------------------------------------------------------------------


def annotate(text: str, span: tuple[int, int], note: str) -> str:
    """The text with " (note)" inserted right after the target word: "many camps (a penal colony) for ..."."""
    start, end = span
    if not 0 <= start < end <= len(text):
        raise ValueError(f"span {span} is not a word of a {len(text)}-character text")
    return f"{text[:end]} ({note.strip()}){text[end:]}"


def filler(model, note: str) -> str:
    """A content-free note as long as `note` in the model's tokens (neutral words, cycled): the length control."""
    want = len(model.tokenizer.encode(" (" + note.strip() + ")", add_special_tokens=False))
    words: list[str] = []
    while len(model.tokenizer.encode(" (" + " ".join(words) + ")", add_special_tokens=False)) < want:
        words.append(FILLER_WORDS[len(words) % len(FILLER_WORDS)])
    return " ".join(words)


def render(model, context: str, word: str, fmt: PromptFormat = TOPIC_FORMAT,
           span: tuple[int, int] | None = None) -> tuple[str, tuple[int, int]]:
    """(prompt, character span of the word the SAE reads): the template's copy of the word, or, for a template
    without {target_word}, the word where it stands in the context (`span`, relative to the context)."""
    if "{target_word}" in fmt.template:
        text, _, start = render_prompt(fmt.template, context, word)
    else:
        if fmt.template.count("{context}") != 1 or span is None:
            raise ValueError(f"template {fmt.template!r} needs one {{context}}, and a span of the word in it")
        head, tail = fmt.template.split("{context}")
        text, start = head + context + tail, len(head) + span[0]
    if fmt.chat:
        tok = model.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ValueError("this tokenizer has no chat template: use a completion-style PromptFormat")
        wrapped = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
        if tok.bos_token and wrapped.startswith(tok.bos_token):
            wrapped = wrapped[len(tok.bos_token):]  # the tokenizer adds BOS itself
        start += wrapped.index(text)
        text = wrapped
    return text, (start, start + len(word))


def item_prompt(model, item: SenseItem, note: str | None = None,
                fmt: PromptFormat = TOPIC_FORMAT) -> tuple[str, tuple[int, int]]:
    """The item's prompt, annotated with `note` after the word when given, and the span of the word to read."""
    context = item.text if note is None else annotate(item.text, item.span, note)
    return render(model, context, item.word, fmt, item.span)


class SpanEnds:
    """Position selector for `saelab.extract`: the last token of one character span per text (the word to read),
    and with `last=True` also the text's last token (where the next-token label logits are read)."""

    def __init__(self, spans: Sequence[tuple[int, int]], last: bool = True):
        self.spans, self.last = [tuple(int(x) for x in s) for s in spans], last

    @property
    def spec(self) -> str:
        return f"span_ends:{self.last}:" + sha256_text(*(f"{a},{b}" for a, b in self.spans))[:16]

    def __call__(self, tokens) -> list[int]:
        found = covering(tokens.offsets, *self.spans[tokens.index])
        return found[-1:] + ([len(tokens.token_ids) - 1] if self.last and found else [])


@dataclass
class PromptRun:
    """One pass over prompts: the hook's activation at each read position, and the label-word logits."""

    acts: torch.Tensor  # [n, d] at the hook, the read position
    logits: torch.Tensor | None  # [n, n_labels] next-token logits of the label words after the prompt
    prompts: list[str]


def read_prompts(model, prompts: Sequence[tuple[str, tuple[int, int]]], hook: str, *,
                 fmt: PromptFormat | None = TOPIC_FORMAT, cache: bool | None = None, batch_size: int = 32,
                 progress: bool = True) -> PromptRun:
    """Run (prompt, read span) pairs once: the activation at `hook` at each span's last token and, when `fmt` is
    given, its label words' next-token logits (through the final norm and unembedding, last position only)."""
    prompts = [(p, tuple(s)) for p, s in prompts]
    index = {p: i for i, p in enumerate(dict.fromkeys(prompts))}  # an identical prompt runs once
    unique = list(index)
    where = torch.tensor([index[p] for p in prompts]) if len(unique) < len(prompts) else None
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    hooks = list(dict.fromkeys([hook] + ([final] if fmt is not None else [])))
    acts = extract(model, [p for p, _ in unique], hooks, pooling="none",
                   positions=SpanEnds([s for _, s in unique], last=fmt is not None), batch_size=batch_size,
                   cache=cache, dataset="reformulation prompts", progress=progress)
    first, last = acts.offsets[:-1], acts.offsets[1:] - 1
    read, logits = acts[hook][first].float(), None
    if fmt is not None:
        logits = label_logits(model, acts[final][last], label_token_ids(model.tokenizer, fmt.label_words, fmt.prefix))
    if where is not None:
        read, logits = read[where], None if logits is None else logits[where]
    return PromptRun(read, logits, [p for p, _ in prompts])


def calibration_offset(logits: torch.Tensor) -> torch.Tensor:
    """The model's label prior on these prompts, without labels: the mean log-probability of each label word
    (renormalised over the label words). Subtracting it is contextual calibration (Zhao et al. 2021)."""
    return logits.log_softmax(-1).mean(0)


def predict(logits: torch.Tensor, offset: torch.Tensor | None = None) -> np.ndarray:
    """The label with the highest (calibrated, when `offset` is given) log-probability."""
    scores = logits.log_softmax(-1) - (offset if offset is not None else 0)
    return scores.argmax(-1).numpy()


# ------------------------------------------------------------------------------------------------------------------
# The model's reading: nearest sense prototype
# ------------------------------------------------------------------------------------------------------------------


def find_form(text: str, lemma: str) -> tuple[int, int] | None:
    """Span of the first whole-word occurrence of `lemma` (underscores as spaces) in `text`, its last word
    possibly inflected regularly (-s, -es, -y -> -ies, -man -> -men); None when absent."""
    *head, last = lemma.split("_")
    forms = {last, last + "s", last + "es"} | ({last[:-1] + "ies"} if last.endswith("y") else set()) | (
        {last[:-3] + "men"} if last.endswith("man") else set())
    prefix = "".join(rf"{re.escape(w)}\s+" for w in head)
    alternatives = "|".join(sorted(map(re.escape, forms), key=len, reverse=True))
    match = re.search(rf"(?<![\w-]){prefix}(?:{alternatives})(?![\w-])", text, flags=re.IGNORECASE)
    return match.span() if match else None


@dataclass
class Prototypes:
    """The contexts that stand for each sense: its gloss (as "word (gloss)") and its example sentences in which the
    word is found; `acts` holds the hook's activation at the word's copy in each context's prompt."""

    key: list[tuple[str, str]]  # (lemma, pos) of each context
    sense: list[int]  # index of the sense among the lemma's candidate senses
    kind: list[str]  # "gloss" or "example"
    text: list[str]  # the context sentence
    acts: torch.Tensor  # [n_contexts, d]

    def encoded(self, sae) -> torch.Tensor:
        """The contexts' SAE codes."""
        with torch.no_grad():
            return sae.encode(self.acts.to(sae.W_enc.dtype)).float()


def prototype_contexts(items: Sequence[SenseItem], max_examples: int = 2) -> list[tuple]:
    """(key, sense index, kind, context, word, span) for each sense of each distinct lemma among `items`."""
    out, seen = [], set()
    for it in _check_items(items):
        key = (it.lemma, it.pos)
        if key in seen:
            continue
        seen.add(key)
        surface = it.lemma.replace("_", " ")
        for j, sense in enumerate(it.senses):
            gloss_context = f"{surface} ({sense.gloss})"
            out.append((key, j, "gloss", gloss_context, surface, (0, len(surface))))
            found = [(ex, span) for ex in sense.examples if (span := find_form(ex, it.lemma))][:max_examples]
            out += [(key, j, "example", ex, ex[span[0]:span[1]], span) for ex, span in found]
    return out


def prototypes(model, items: Sequence[SenseItem], hook: str, *, fmt: PromptFormat = TOPIC_FORMAT,
               max_examples: int = 2, cache: bool | None = None, progress: bool = True) -> Prototypes:
    """Every sense's contexts, read with the items' own prompt format (one pass, stopping at `hook`'s block)."""
    contexts = prototype_contexts(items, max_examples)
    prompts = [render(model, ctx, word, fmt) for _, _, _, ctx, word, _ in contexts]
    run = read_prompts(model, prompts, hook, fmt=None, cache=cache, progress=progress)
    return Prototypes([c[0] for c in contexts], [c[1] for c in contexts], [c[2] for c in contexts],
                      [c[3] for c in contexts], run.acts)


@dataclass
class Reading:
    """Which candidate sense each item is read as (`choice`), with every candidate's similarity and the margin
    of the choice over the runner-up; `scores[i]` has one entry per candidate sense of item i."""

    choice: np.ndarray  # [n] index into item.senses
    scores: list[np.ndarray]
    name: str = ""

    @property
    def margin(self) -> np.ndarray:
        return np.array([np.sort(s)[-1] - np.sort(s)[-2] if len(s) > 1 else np.inf for s in self.scores])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


CENTERING = ("none", "all", "lemma")


def nearest_sense(item_vecs: torch.Tensor, context_vecs: torch.Tensor, items: Sequence[SenseItem],
                  protos: Prototypes, *, center: bool | str = False, name: str = "") -> Reading:
    """The model's reading: for each item, the candidate sense whose prototype (mean vector of its contexts, the
    item's own sentence left out) is most cosine-similar to the item's vector. A sense with no context scores -inf.

    center: "none" (False); "all" (True): subtract the mean of all contexts first (raw activations share a large
    direction that would dominate every cosine); "lemma": subtract, per item, the mean of its word's sense
    prototypes, so that what every sense of the word shares (the word itself) drops out and only what tells the
    senses apart is compared. Uses no label and no gold sense.
    """
    items = _check_items(items)
    center = {False: "none", True: "all"}.get(center, center) if isinstance(center, bool) else center
    if center not in CENTERING:
        raise ValueError(f"center must be one of {CENTERING} (or a bool), got {center!r}")
    if len(item_vecs) != len(items) or len(context_vecs) != len(protos.key):
        raise ValueError(f"{len(item_vecs)} item vectors for {len(items)} items, {len(context_vecs)} context vectors "
                         f"for {len(protos.key)} contexts: encode the runs these items and prototypes came from")
    mean = context_vecs.float().mean(0) if center == "all" else torch.zeros(context_vecs.shape[1])
    vecs, contexts = item_vecs.detach().float() - mean, context_vecs.detach().float() - mean
    rows: dict[tuple[str, str], list[int]] = {}
    for r, key in enumerate(protos.key):
        rows.setdefault(key, []).append(r)
    choice, scores = [], []
    for i, it in enumerate(items):
        mine = [r for r in rows.get((it.lemma, it.pos), []) if protos.text[r] != it.text]
        found = [j for j in range(len(it.senses)) if any(protos.sense[r] == j for r in mine)]
        s = np.full(len(it.senses), -np.inf)
        if found:
            proto = torch.stack([contexts[[r for r in mine if protos.sense[r] == j]].mean(0) for j in found])
            shift = proto.mean(0) if center == "lemma" else torch.zeros(proto.shape[1])
            s[found] = (_unit(proto - shift) @ _unit(vecs[i] - shift)).numpy()
        scores.append(s)
        choice.append(int(np.argmax(s)))
    return Reading(np.array(choice), scores, name)


def external_reading(items: Sequence[SenseItem], encoder=None, *, max_examples: int = 2,
                     progress: bool = False) -> Reading:
    """The sentence encoder's reading: the candidate sense whose description (gloss and example sentences, the
    item's own sentence left out; unit embeddings averaged) is most cosine-similar to the item's sentence."""
    items = _check_items(items)

    def description(sense: Sense, item: SenseItem) -> list[str]:
        return [sense.gloss] + [e for e in sense.examples if e != item.text][:max_examples]

    texts = sorted({t for it in items for s in it.senses for t in description(s, it)} | {it.text for it in items})
    emb = dict(zip(texts, torch.as_tensor(encode_sentences(texts, encoder, progress=progress)).float()))
    choice, scores = [], []
    for it in items:
        s = np.array([float(_unit(torch.stack([emb[t] for t in description(sense, it)]).mean(0)) @ emb[it.text])
                      for sense in it.senses])
        scores.append(s)
        choice.append(int(np.argmax(s)))
    return Reading(np.array(choice), scores, "sentence encoder")


LEVELS = ("lexname", "sense")


def disagreement(reading: Reading, external: Reading, items: Sequence[SenseItem],
                 level: str = "lexname") -> np.ndarray:
    """How much better the reading's best sense fits than the external reading's sense (0 when they agree), per
    item; > 0 flags a misreading. level="lexname": only a disagreement about the supersense counts (the best sense
    of another lexicographer file against the best of the external sense's file): a misreading that would change a
    supersense label. level="sense": any other sense."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    out = []
    for it, s, e in zip(items, reading.scores, external.choice):
        same = np.array([j == e if level == "sense" else sense.lexname == it.senses[e].lexname
                         for j, sense in enumerate(it.senses)])
        other = s[~same]
        out.append(max(0.0, float(other.max() - s[same].max())) if len(other) and np.isfinite(other.max()) else 0.0)
    return np.array(out)


def wrong_sense(items: Sequence[SenseItem], chosen: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each item, a random candidate sense (seeded) other than `chosen`, from another lexicographer file when
    the word has one: the wrong-gloss control."""
    rng = np.random.default_rng(seed)
    out = []
    for it, c in zip(items, chosen):
        others = [j for j in range(len(it.senses)) if j != c]
        elsewhere = [j for j in others if it.senses[j].lexname != it.senses[c].lexname]
        out.append(int(rng.choice(elsewhere or others)))
    return np.array(out)


def glosses(items: Sequence[SenseItem], choice: np.ndarray) -> list[str]:
    """The gloss of each item's chosen sense."""
    return [it.senses[int(c)].gloss for it, c in zip(items, choice)]


def inventory_items(rows: Sequence[Mapping], *, max_senses: int = 8) -> list[SenseItem]:
    """SenseItems from dicts with text, word, span, lemma, pos (and optionally synset, label), senses from
    `saelab.tasks.sense_inventory` (rows whose lemma has no entry are an error)."""
    inventory = sense_inventory()
    out = []
    for r in rows:
        senses = inventory.get((r["lemma"], r["pos"]))
        if senses is None:
            raise ValueError(f"{r['lemma']!r} ({r['pos']}) is not in the sense inventory (data/wordnet_senses.jsonl)")
        gold = next((s.gloss for s in senses if s.synset == r.get("synset")), "")
        out.append(SenseItem(r["text"], r["word"], tuple(r["span"]), r["lemma"], r["pos"], senses[:max_senses],
                             r.get("synset", ""), gold, r.get("label", -1)))
    return out


def wic_items(pairs: Sequence, *, max_senses: int = 8) -> list[SenseItem]:
    """Two SenseItems per WiC pair (context 1, then context 2), label = the pair's label."""
    return inventory_items([{"text": c, "word": c[a:b], "span": (a, b), "lemma": p.lemma, "pos": p.pos,
                             "synset": syn, "label": p.label}
                            for p in pairs for c, (a, b), syn in ((p.context_1, p.span_1, p.synset_1),
                                                                  (p.context_2, p.span_2, p.synset_2))],
                           max_senses=max_senses)


def wic_prompt(first: SenseItem, second: SenseItem, notes: tuple[str | None, str | None] = (None, None),
               fmt: PromptFormat = WIC_FORMAT) -> tuple[str, tuple[int, int]]:
    """A WiC prompt over two contexts, each annotated with its note when given; the span is the question's word."""
    contexts = [it.text if n is None else annotate(it.text, it.span, n) for it, n in zip((first, second), notes)]
    word = first.word.lower()
    text = (fmt.template.replace("{context_1}", contexts[0]).replace("{context_2}", contexts[1])
            .replace("{target_word}", word))
    start = text.rindex(f'"{word}"') + 1
    return text, (start, start + len(word))


def tweet_items(texts: Sequence[str], labels: Sequence[int], *, seed: int = 0,
                max_senses: int = 8) -> list[SenseItem]:
    """For the negative control: in each tweet, one random word (seeded) that is a noun lemma of the sense
    inventory; tweets without one are left out."""
    nouns = {lemma: senses for (lemma, pos), senses in sense_inventory().items() if pos == "noun" and "_" not in lemma}
    rng = np.random.default_rng(seed)
    out = []
    for text, label in zip(texts, labels):
        found = [m for m in re.finditer(r"(?<![\w-])[A-Za-z]+(?![\w-])", text) if m.group().lower() in nouns]
        if found:
            m = found[rng.integers(len(found))]
            out.append(SenseItem(text, m.group(), m.span(), m.group().lower(), "noun",
                                 nouns[m.group().lower()][:max_senses], label=int(label)))
    return out


__all__ = [
    "CENTERING",
    "FILLER_WORDS",
    "READ_FORMAT",
    "TOPIC_CHAT_FORMAT",
    "TOPIC_FORMAT",
    "TWEET_FORMAT",
    "WIC_FORMAT",
    "PromptFormat",
    "PromptRun",
    "Prototypes",
    "Reading",
    "SenseItem",
    "SpanEnds",
    "LEVELS",
    "annotate",
    "calibration_offset",
    "disagreement",
    "external_reading",
    "filler",
    "find_form",
    "glosses",
    "inventory_items",
    "item_prompt",
    "nearest_sense",
    "predict",
    "prototype_contexts",
    "prototypes",
    "read_prompts",
    "render",
    "tweet_items",
    "wic_items",
    "wic_prompt",
    "wrong_sense",
]
