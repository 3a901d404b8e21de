"""Talking to the Hugging Face hub: a fast reachability probe and a switch to offline mode.

Offline, `datasets` and `transformers` spend half a minute retrying HTTP requests before failing; these helpers
let saelab fail in milliseconds with a message that says what to do, or read the local cache without retries.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

_TRUE = {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub (HF_ENDPOINT, default huggingface.co) be reached on port 443 right now?

    A plain TCP connect with a short timeout: it answers in milliseconds offline, where `datasets` would spend
    half a minute retrying HTTP requests. False at once when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set.
    """
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(enabled: bool) -> Iterator[None]:
    """Switch datasets / huggingface_hub to offline mode for one call, so they read the cache without retries.

    Both libraries read HF_HUB_OFFLINE once at import, so setting the environment variable now would do nothing.
    """
    import datasets
    import huggingface_hub.constants as hub_constants

    old = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    if enabled:
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = old


__all__ = [
    "hub_reachable",
    "hub_offline",
]
