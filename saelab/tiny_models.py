"""Tiny randomly initialised language models in four layouts, and the tokenizers they use; built in code, offline.

`saelab.models.tiny_model(layout=...)` boots one of these as a TransformerLens bridge. The layouts are the four the
papers and the embedded models use, and they differ where saelab could go wrong:

    gpt2     LayerNorm, learned position embeddings, one fused QKV projection, tied unembedding (PS-Eval's model)
    gemma2   RMSNorm (1 + weight), rotary, pre- and post-norms around attention and MLP, logit soft-capping
             (MOSAIC's and Delta Token Confidence's model)
    gemma3   as Gemma 2 with sliding and full attention layers and a rotary embedding per layer type (the default)
    llama    RMSNorm, rotary, grouped-query attention (SmolLM2, the second embedded model)

Two tokenizers: `byte_tokenizer` (4 special tokens + 256 bytes: a position is a byte, which makes hand-checked unit
tests easy) and `word_tokenizer`, a byte-level BPE of 8,192 tokens trained once on the offline corpora (the label
words of the prompts are whole tokens, as in real vocabularies), so that the notebooks can run end to end on a
tiny model: PS-Eval needs one-token target words, zero-shot prompts need label words with distinct first tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from saelab._version import __version__
from saelab.config import cache_dir
from saelab.io import atomic_dir, sha256_file
from saelab.tasks import load_task

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0, 1, 2, 3 in both tokenizers
WORD_VOCAB = 8192
TOKENIZERS = ("bytes", "words")


@dataclass(frozen=True)
class TinyLayout:
    """One architecture: the transformers classes, and the hub name whose TransformerLens adapter boots it."""

    hub_name: str
    architecture: str  # transformers' class name, set as `config.architectures` (the bridge picks its adapter by it)
    build: Callable[[int, int, int], Any]  # (vocab, n_layers, d_model) -> config


def _gpt2(vocab: int, n_layers: int, d_model: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=2, n_positions=1024,
                      pad_token_id=0, eos_token_id=1, bos_token_id=2)


def _rotary(config_cls_name: str) -> Callable[[int, int, int], Any]:
    def build(vocab: int, n_layers: int, d_model: int):
        import transformers

        return getattr(transformers, config_cls_name)(
            vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32, pad_token_id=0, eos_token_id=1,
            bos_token_id=2)

    return build


TINY_LAYOUTS: dict[str, TinyLayout] = {
    "gemma3": TinyLayout("google/gemma-3-270m", "Gemma3ForCausalLM", _rotary("Gemma3TextConfig")),
    "gemma2": TinyLayout("google/gemma-2-2b", "Gemma2ForCausalLM", _rotary("Gemma2Config")),
    "llama": TinyLayout("HuggingFaceTB/SmolLM2-135M", "LlamaForCausalLM", _rotary("LlamaConfig")),
    "gpt2": TinyLayout("gpt2", "GPT2LMHeadModel", _gpt2),
}


def tiny_hf_model(layout: str, vocab: int, n_layers: int, d_model: int, seed: int):
    """A randomly initialised transformers model of `layout` (eval mode), seeded without touching the caller's RNG."""
    import transformers

    if layout not in TINY_LAYOUTS:
        raise ValueError(f"Unknown tiny layout {layout!r}; choose one of {sorted(TINY_LAYOUTS)}.")
    spec = TINY_LAYOUTS[layout]
    config = spec.build(vocab, n_layers, d_model)
    config.architectures = [spec.architecture]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(transformers, spec.architecture)(config).eval()


# --------------------------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------------------------

def _wrap(core, folder_name: str, build_core: Callable[[], Any] | None = None):
    """Save a `tokenizers` core as a transformers fast tokenizer (BOS first, left padding) in a cache folder, once.

    The bridge re-loads tokenizers by `name_or_path`, so each tokenizer lives in a folder (one per saelab version).
    """
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = cache_dir("models") / folder_name
    if not (folder / "tokenizer.json").is_file():
        core = core if core is not None else build_core()
        core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
            padding_side="left",
        )
        with atomic_dir(folder) as tmp:
            tokenizer.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(folder, add_bos_token=True)


def byte_tokenizer():
    """A byte-level tokenizer (4 special tokens + 256 bytes) built in code; pads on the left like Gemma."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[char] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), pre_tokenizers.Split("", "isolated")]
    )
    core.decoder = decoders.ByteLevel()
    return _wrap(core, f"tiny-tokenizer-{__version__}")


def _train_word_tokenizer():
    """Byte-level BPE (GPT-2's scheme) trained on every offline text, plus the label words of the prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tweets, topics, wic = load_task("tweet-sentiment"), load_task("wordnet-topics"), load_task("wordnet-wic")
    texts = tweets.train.texts + tweets.test.texts + topics.train.texts + topics.test.texts
    texts += [context for pair in wic.train + wic.test for context in (pair.context_1, pair.context_2)]
    # the words prompts score as labels, made whole tokens (real vocabularies have them): " negative", " food", ...
    labels = [name.rsplit(".", 1)[-1].replace("_", " ") for name in tweets.label_names + topics.label_names]
    texts += [" ".join(f" {word}" for word in labels)] * 500
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=WORD_VOCAB, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return core


def word_tokenizer():
    """A byte-level BPE tokenizer of 8,192 tokens trained on the offline corpora (about 10 s once, then cached)."""
    return _wrap(None, f"tiny-words-{WORD_VOCAB}-{__version__}", _train_word_tokenizer)


def tiny_tokenizer(kind: str = "bytes"):
    """The tokenizer of a tiny model: ``"bytes"`` (the unit tests') or ``"words"`` (the notebooks' tiny models)."""
    if kind not in TOKENIZERS:
        raise ValueError(f"Unknown tiny tokenizer {kind!r}; choose one of {TOKENIZERS}.")
    return byte_tokenizer() if kind == "bytes" else word_tokenizer()


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a saved tokenizer's vocabulary file (so caches notice a retrained vocabulary)."""
    return sha256_file(f"{tokenizer.name_or_path}/tokenizer.json")[:12]


__all__ = [
    "SPECIAL_TOKENS",
    "TINY_LAYOUTS",
    "TOKENIZERS",
    "WORD_VOCAB",
    "TinyLayout",
    "byte_tokenizer",
    "tiny_hf_model",
    "tiny_tokenizer",
    "tokenizer_fingerprint",
    "word_tokenizer",
]
