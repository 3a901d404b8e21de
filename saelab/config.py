"""Process-wide settings read from the environment: where caches live, whether smoke mode is on, which model loads.

    SAELAB_SMOKE=1            notebooks shrink their sizes to run in CI in minutes
    SAELAB_CACHE_DIR=/path    where converted models, activations and SAEs are cached
    SAELAB_MODEL=tiny-gpt2    the model `saelab.load_model()` (and so every notebook) loads by default
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import platformdirs

SMOKE_ENV = "SAELAB_SMOKE"
CACHE_ENV = "SAELAB_CACHE_DIR"
MODEL_ENV = "SAELAB_MODEL"
EMBEDDED_DEFAULT = "gemma-3-270m"


def smoke_mode() -> bool:
    """True when `SAELAB_SMOKE` is set to a truthy value: notebooks shrink their sizes to run in CI in minutes."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def set_smoke(on: bool = True) -> bool:
    """Switch smoke mode on (or off) for this process, from inside a notebook: ``saelab.set_smoke(True)``.

    It sets `SAELAB_SMOKE`, the one switch every part of saelab reads when it runs (`smoke_mode()`, the notebooks'
    sizes, the zoo's SAE specs and corpus), so call it before the notebook's parameter cell reads `smoke_mode()`.
    Child processes started afterwards inherit it. Returns the new setting.
    """
    if not isinstance(on, bool):
        raise TypeError(f"set_smoke takes True or False, not {on!r}")
    os.environ[SMOKE_ENV] = "1" if on else "0"
    return on


def default_model() -> str:
    """The model notebooks load: `SAELAB_MODEL` when set (e.g. ``tiny-gpt2`` for a second-architecture CI run, or a
    hub name such as ``google/gemma-2-2b``), else the embedded Gemma 3 270M."""
    return os.environ.get(MODEL_ENV, "").strip() or EMBEDDED_DEFAULT


def cache_dir(*parts: str) -> Path:
    """The saelab cache folder (converted models, activations, SAEs), created on demand.

    `SAELAB_CACHE_DIR` overrides the platform default (`~/.cache/saelab` on Linux).
    """
    root = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("saelab"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_from_dict(cls, d: dict[str, Any]):
    """`cls(**d)` for a config dataclass, keeping only its fields: an unknown key (written by another saelab
    version or tool) warns and is dropped, so every config's `from_dict` behaves the same."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        warnings.warn(f"{cls.__name__}.from_dict ignores unknown keys {unknown}", stacklevel=3)
    return cls(**{key: value for key, value in d.items() if key in names})


__all__ = [
    "config_from_dict",
    "SMOKE_ENV",
    "CACHE_ENV",
    "smoke_mode",
    "set_smoke",
    "cache_dir",
]
