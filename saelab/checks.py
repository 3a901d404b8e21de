"""The checks every public entry point runs on what a learner passes in, with messages that say what to do.

One home for them, so a check (and its wording) is written once: texts and prompts, hook names, the hook an SAE
reads, latent ids and steering strengths. Each returns the checked value, so callers pass it inward.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


def check_texts(texts: Sequence[str], *, name: str = "texts", purpose: str = "extract activations from") -> list[str]:
    """A non-empty list of non-blank strings (`name` and `purpose` only shape the message: "prompts", ...)."""
    item = name[:-1] if name.endswith("s") else name
    if isinstance(texts, str):
        raise TypeError(f"`{name}` must be a list of strings, not a single string: wrap it as [{item}].")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"`{name}` must be a list of strings, not {texts!r}.") from None
    if not texts:
        raise ValueError(f"`{name}` is empty: give at least one {item} to {purpose}.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(
            f"{len(bad)} item(s) of `{name}` are not non-empty strings (first at index {bad[0]}: "
            f"{texts[bad[0]]!r}); drop or fix them: every {item} needs some text."
        )
    return texts


def check_hooks(model, hook: str | Sequence[str]) -> list[str]:
    """One hook name or a list of them, each checked to exist in the model (the bridge ignores unknown names)."""
    example = "a hook name such as 'blocks.6.hook_resid_post', or a list of them"
    try:
        hooks = [hook] if isinstance(hook, str) else list(hook)
    except TypeError:
        raise TypeError(f"`hook` must be {example}, not {hook!r}.") from None
    if not hooks:
        raise ValueError("No hook given: pass a hook name such as 'blocks.6.hook_resid_post'.")
    wrong = [h for h in hooks if not isinstance(h, str)]
    if wrong:
        raise TypeError(f"`hook` must be {example}, not {wrong[0]!r}.")
    valid = set(model.hook_dict)
    for name in hooks:
        if name not in valid:
            close = difflib.get_close_matches(name, sorted(valid), n=5, cutoff=0.6)
            layer_hint = ""
            match = BLOCK_HOOK.match(name)
            if match and int(match.group(1)) >= model.cfg.n_layers:
                layer_hint = f" The model has {model.cfg.n_layers} blocks (0..{model.cfg.n_layers - 1})."
            raise ValueError(
                f"Unknown hook '{name}'.{layer_hint} Close valid names: {close or 'none'}. "
                "See saelab.activations.hook_names(model) for all of them."
            )
    return list(dict.fromkeys(hooks))


def resolve_hook(model, hook: str | None, sae=None) -> str:
    """The hook to use: `hook`, else the SAE's `hook_name`; checked to exist in the model."""
    if hook is None and sae is not None:
        hook = getattr(sae.cfg, "hook_name", None)
        if hook is None:
            raise ValueError("This SAE has no hook_name, so saelab does not know where it reads: set "
                             "sae.cfg.hook_name (e.g. 'blocks.6.hook_resid_post') or pass hook=.")
    if not isinstance(hook, str):
        raise TypeError(f"A hook is a hook name such as 'blocks.6.hook_resid_post', not {hook!r}.")
    try:
        return check_hooks(model, hook)[0]
    except ValueError as err:
        origin = " (the SAE's hook_name)" if sae is not None else ""
        raise ValueError(f"Cannot use {hook!r}{origin}: it is not a hook of this model. {err} An SAE must be "
                         "used with the model it was trained on.") from None


def check_latent(latent: Any, d_sae: int) -> int:
    """`latent` as an int, checked to be a latent of an SAE with `d_sae` latents."""
    try:
        if isinstance(latent, bool):
            raise TypeError
        latent = operator.index(latent)
    except TypeError:
        raise ValueError(f"A latent is an integer between 0 and {d_sae - 1}, not {latent!r}.") from None
    if not 0 <= latent < d_sae:
        raise ValueError(f"Latent {latent} does not exist: this SAE has {d_sae:,} latents; choose one from 0 to "
                         f"{d_sae - 1}.")
    return latent


def check_latents(sae, latents: int | Sequence[int]) -> list[int]:
    """One latent id or several (a list, array or tensor), each checked against the SAE's width."""
    if isinstance(latents, (np.ndarray, torch.Tensor)):
        values = torch.as_tensor(latents).reshape(-1).tolist()
    elif isinstance(latents, Sequence) and not isinstance(latents, str):
        values = list(latents)
    else:
        values = [latents]
    return [check_latent(value, sae.cfg.d_sae) for value in values]


def check_alpha(alpha: Any) -> float:
    """A steering strength: a finite number."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha (the steering strength) must be a number, not {alpha!r}.") from None
    if not math.isfinite(value):
        raise ValueError(f"alpha (the steering strength) must be a finite number, got {value}; try a value such as "
                         "2, 5 or 10 (negative values steer away from the latent).")
    return value


__all__ = [
    "BLOCK_HOOK",
    "check_alpha",
    "check_hooks",
    "check_latent",
    "check_latents",
    "check_texts",
    "resolve_hook",
]
