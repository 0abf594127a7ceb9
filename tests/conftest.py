"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread per test module: on a shared 2-core machine torch's two OpenMP threads wait
    on each other (up to 10x slower); tests that need more threads set them themselves."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
