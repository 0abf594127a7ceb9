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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny.safetensors``: an untrained width-4 emulator (torch seed 0), for the tests of the plumbing
    (files, command lines, batches, resume), never of the physics."""
    from svrt.emulator import SVCE, EmulatorConfig, save_model

    d = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    save_model(d / "tiny.safetensors", SVCE(EmulatorConfig(width=4)), {"name": "tiny"})
    return d / "tiny.safetensors"
