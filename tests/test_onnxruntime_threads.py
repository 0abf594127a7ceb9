"""ONNX Runtime sessions on the CPU share the process's thread budget and do not spin (issue 20, item 5):
with ONNX Runtime's own defaults a run asked to use one thread (OMP_NUM_THREADS=1) used a spinning thread
per core; and the identity carries the model width the solver's memory plan needs."""

import pytest
import torch

pytest.importorskip("onnxruntime")

from svrt.emulator import save_model  # noqa: E402
from svrt.export.testing import tiny_model  # noqa: E402
from svrt.runtime.engine import load_engine  # noqa: E402

INSTRUMENT = "crisp8542"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from svrt.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("ort-threads")
    save_model(folder / "tiny.safetensors", tiny_model(width=4, n_modes=6, seed=1))
    export_onnx(folder / "tiny.safetensors", folder / "tiny.onnx", INSTRUMENT, check=False)
    return folder / "tiny.onnx"


def _options(engine):
    return [s.get_session_options() for s in (engine.session, engine.vjp_session)]


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_cpu_sessions_follow_torch_threads_and_do_not_spin(graph, torch_threads):
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        engine = load_engine(graph)
    finally:
        torch.set_num_threads(before)
    for o in _options(engine):
        assert o.intra_op_num_threads == torch_threads
        assert o.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert engine.identity.extra["threads"] == torch_threads


def test_threads_given_win(graph):
    engine = load_engine(graph, threads=3)
    assert [o.intra_op_num_threads for o in _options(engine)] == [3, 3]


def test_identity_records_the_width_for_the_memory_plan(graph):
    """Without the width the solver's memory estimate takes an engine as width 64 (4x the activations of a
    width-16 model): the ONNX Runtime engine must say the width its graph was exported with."""
    from svrt.runtime.forward_model import bytes_per_pixel_sample

    engine = load_engine(graph)
    assert engine.identity.extra["width"] == 4
    torch_engine = load_engine(graph.with_name("tiny.safetensors"))
    assert bytes_per_pixel_sample(engine, 6) == pytest.approx(bytes_per_pixel_sample(torch_engine, 6))
