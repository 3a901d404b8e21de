"""A plain Hugging Face copy ("twin") of a TransformerLens bridge, for the forward passes that read or steer only a
residual stream: batched generation and the steering judge's re-encoding.

Why: the bridge wraps every module to offer its hook points, which costs time on a CPU (steered generation of
Gemma 3 270M in `bench/steering.py` on a quiet machine: 1.12x faster on the float32 twin, 1.92x on the bfloat16
twin; docs/design.md). A residual stream is just the input or output of a decoder layer, so a PyTorch hook on the
twin's layer does what the bridge's hook point does. The twin holds the bridge's own weights (its state dict with the
bridge's wrappers taken off), in the model's dtype unless asked otherwise, and is rebuilt when the bridge's
weights change. Anything else falls back to the bridge: another hook, or a bridge with hooks of its own attached.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

import torch

from saelab.models import DTYPES
from saelab.train_sparse import fast_selection_dtype

log = logging.getLogger(__name__)

RESIDUAL_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(pre|post)$")
_WRAPPER = "._original_component"


def fast_dtype(model) -> str | None:
    """"bfloat16" for a float32 `model` on a GPU or on a CPU that multiplies bfloat16 fast
    (`train_sparse.fast_selection_dtype`), else None (the model's own dtype is the fast one)."""
    param = next(model.parameters())
    if param.dtype != torch.float32 or param.device.type not in ("cpu", "cuda"):
        return None
    if param.device.type == "cuda" or fast_selection_dtype() == "bfloat16":
        return "bfloat16"
    return None


def _weights_version(model) -> tuple:
    """Changes whenever a parameter of the bridge is replaced or edited in place."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def _bridge_has_hooks(model) -> bool:
    return any(getattr(m, "fwd_hooks", None) or getattr(m, "bwd_hooks", None) for m in model.modules())


def _decoder_layers(hf, n_layers: int) -> torch.nn.ModuleList | None:
    for module in hf.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    return None


def _build(model, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    hf = model.original_model
    state = {k.replace(_WRAPPER, ""): v for k, v in hf.state_dict().items()}
    twin = AutoModelForCausalLM.from_config(hf.config)
    wanted = twin.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        log.info("no plain twin for %s: %d weights not found under the bridge (e.g. %s)", type(hf).__name__,
                 len(missing), missing[0])
        return None
    twin.load_state_dict({k: state[k] for k in wanted})
    twin.generation_config = hf.generation_config
    head = twin.get_output_embeddings()
    if head is not None:  # generation and the judge hand it a slice of the last positions, which is not contiguous:
        # on a CPU, a bfloat16 linear layer then copies its weight once per row (16 rows of Gemma's 262k-token
        # unembedding: 30 s and 5 GiB, against 0.04 s for a contiguous input)
        head.register_forward_pre_hook(_contiguous_input)
    return twin.to(device=next(model.parameters()).device, dtype=dtype).eval().requires_grad_(False)


def _contiguous_input(module, args):
    return (args[0].contiguous(), *args[1:]) if args else None


def twin(model, dtype: str | None = None):
    """The plain twin of `model` in `dtype` (None: the model's own), built once and reused while the bridge's
    weights stay as they were; None when the bridge's weights cannot be mapped onto a plain model."""
    torch_dtype = DTYPES[dtype] if dtype is not None else next(model.parameters()).dtype
    twins = model.__dict__.setdefault("_saelab_twins", {})
    version = _weights_version(model)
    if torch_dtype not in twins or twins[torch_dtype][0] != version:
        twins[torch_dtype] = (version, _build(model, torch_dtype))
    return twins[torch_dtype][1]


def plain_route(model, hooks: list[str], dtype: str | None = None):
    """(twin, {hook: (layer, "pre" | "post")}) when every hook is a residual stream and the bridge carries no hooks
    of its own, else None (use the bridge). `dtype` other than the model's own needs the plain route."""
    own = next(model.parameters()).dtype
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"forward_dtype={dtype!r}: choose one of {sorted(DTYPES)} (None: the model's own).")
    matches = {h: RESIDUAL_HOOK.match(h) for h in hooks}
    plain = twin(model, dtype) if all(matches.values()) and not _bridge_has_hooks(model) else None
    layers = plain is not None and _decoder_layers(plain, model.cfg.n_layers)
    if not layers:
        if dtype is not None and DTYPES[dtype] != own:
            raise ValueError(f"forward_dtype={dtype!r} runs on a plain copy of the model, which only reads and steers "
                             f"residual streams (blocks.L.hook_resid_pre/post) of a bridge with no hooks attached; "
                             f"got hooks {hooks}. Leave forward_dtype=None.")
        return None
    return plain, {h: (layers[int(m.group(1))], m.group(2)) for h, m in matches.items()}


@contextlib.contextmanager
def _on_residual(layer: torch.nn.Module, where: str, fn) -> Iterator[None]:
    """Call `fn` on the residual stream entering (`pre`) or leaving (`post`) `layer` on each forward pass in the
    block; a tensor it returns replaces the stream."""
    if where == "post":
        def hook(module, args, output):
            new = fn(output[0] if isinstance(output, tuple) else output)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new
        handle = layer.register_forward_hook(hook)
    else:
        def hook(module, args, kwargs):
            new = fn(args[0] if args else kwargs["hidden_states"])
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
        handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def add_to_residual(layer: torch.nn.Module, where: str, vectors: torch.Tensor):
    """Add `vectors` ([d] or one per row [batch, d]) to the residual stream at `layer` (`pre` or `post`), at every
    position, for the duration of the block."""
    def add(x: torch.Tensor) -> torch.Tensor:
        v = vectors.to(x.device, x.dtype)
        return x + (v if v.dim() == 1 else v[:, None, :])
    return _on_residual(layer, where, add)


def capture_residual(layer: torch.nn.Module, where: str, store: dict, name: str):
    """Store the residual stream at `layer` (`pre` or `post`) as `store[name]` on each forward pass in the block."""
    return _on_residual(layer, where, lambda x: store.__setitem__(name, x.detach()))


@torch.no_grad()
def forward_capturing(model, hooks: list[str], forward_dtype: str | None = None, **inputs):
    """One forward pass (`inputs` go to the Hugging Face model) that returns (logits, {hook: activation}), on the
    plain twin where `plain_route` allows, else through the bridge's hook points."""
    captured: dict[str, torch.Tensor] = {}
    route = plain_route(model, hooks, forward_dtype)
    with contextlib.ExitStack() as stack:
        if route is None:
            def capture(activation, hook, name):
                captured[name] = activation.detach()
            stack.enter_context(model.hooks(fwd_hooks=[(h, _named(capture, h)) for h in hooks]))
            forward = model.original_model
        else:
            forward, where = route
            for h, (layer, side) in where.items():
                stack.enter_context(capture_residual(layer, side, captured, h))
        logits = forward(**inputs).logits
    return logits, captured


def _named(fn, name):
    return lambda activation, hook: fn(activation, hook, name)


__all__ = ["RESIDUAL_HOOK", "add_to_residual", "capture_residual", "fast_dtype", "forward_capturing", "plain_route",
           "twin"]
