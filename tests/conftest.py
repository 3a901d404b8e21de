"""Shared fixtures: a tiny random bridge for fast unit tests and the embedded Gemma 3 270M for the few real ones."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def one_thread():
    """For tests on tiny tensors: one thread is faster, and immune to oversubscription on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    from saelab.models import tiny_model

    return tiny_model(seed=0)


@pytest.fixture(scope="session")
def gemma():
    from saelab.models import load_model

    return load_model("gemma-3-270m", device="cpu")
