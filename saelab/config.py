"""Process-wide settings read from the environment: where caches live and whether smoke mode is on."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

SMOKE_ENV = "SAELAB_SMOKE"
CACHE_ENV = "SAELAB_CACHE_DIR"


def smoke_mode() -> bool:
    """True when `SAELAB_SMOKE` is set to a truthy value: notebooks shrink their sizes to run in CI in minutes."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir(*parts: str) -> Path:
    """The saelab cache folder (converted models, activations, SAEs), created on demand.

    `SAELAB_CACHE_DIR` overrides the platform default (`~/.cache/saelab` on Linux).
    """
    root = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("saelab"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = [
    "SMOKE_ENV",
    "CACHE_ENV",
    "smoke_mode",
    "cache_dir",
]
