"""Every back end present agrees with PyTorch FP32 (forward and gradient), its gradient agrees with
finite differences, and bad files or requests fail with one clear sentence.

Back ends: torch (CPU; CUDA where present), onnxruntime (CPU EP; CUDA EP where onnxruntime-gpu is
installed), tensorrt (where TensorRT and a GPU exist). Missing ones are reported as skips.

Tolerances (argued in tests/test_export.py; "rel" is relative to the largest reference value, "L2"
is ||test - ref|| / ||ref||): FP32 forward 1e-5 rel; FP32 gradients 1e-4 L2 and 1e-3 rel (rounding
alone gives ~1e-6, but where two FP32 implementations round a near-zero pre-activation or a near-tie
of a max-pool window differently the gradient, unlike the forward, jumps: measured once here, torch
FP32 against float64 on a padded 40x56 input, 8e-5 rel, 2e-5 L2, in a small patch; a wrong adjoint
gives O(1e-2..1)); FP16 forward and d/d obj 1e-2 rel; FP16 d/d modes 0.2 L2 (FP16 flips such
decisions a few times per 1e4 entries per layer).

Finite differences: the directional derivative of L = sum(w * f(obj + t v, modes + t u)) by central
differences, accumulated in float64 from the engine's outputs, against <grad, (v, u)>, for v (or u)
the computed gradient times random weights in [1, 1.5] (a wrong gradient changes <grad, v> but not
the finite difference; random directions are nearly orthogonal to the small modes gradient and
drown in rounding). The network is piecewise linear plus the smooth normalisation: the error is the
few ReLU kinks crossed within +-t and the outputs' rounding over 2t. Measured: FP32 (t = 1e-3) up to
2e-3 relative (tolerance 1e-2), FP16 (t = 1e-2) up to 5e-3 (tolerance 3e-2).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from svrt.emulator import save_model
from svrt.errors import SvrtError
from svrt.export.inputs import random_inputs, solar_inputs
from svrt.export.testing import tiny_model
from svrt.runtime.engine import load_engine

INSTRUMENT = "crisp8542"
M = 6




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from svrt.export.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("engines")
    model = tiny_model(width=4, n_modes=M, seed=1)
    save_model(folder / "tiny.safetensors", model)
    paths = {"model": folder / "tiny.safetensors", "folder": folder}
    for precision in ("fp32", "fp16"):
        paths[precision] = folder / f"{INSTRUMENT}-{precision}.onnx"
        export_onnx(paths["model"], paths[precision], INSTRUMENT, precision=precision, check=False)
    paths["novjp"] = folder / "novjp.onnx"
    export_onnx(paths["model"], paths["novjp"], INSTRUMENT, vjp=False, check=False)
    paths["other"] = folder / "hifi.onnx"
    export_onnx(paths["model"], paths["other"], "hifi6563", check=False)
    return paths


def _ort_cuda() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return ""


def _tensorrt() -> str:
    from svrt.runtime.backends.tensorrt_backend import unavailable_reason

    return unavailable_reason()


NO_CUDA = "" if torch.cuda.is_available() else "no CUDA GPU visible to torch"
# torch.compile of even the tiny model takes minutes on 2 shared cores (measured ~3.5 min for forward
# and backward): opt in with SVRT_TEST_COMPILED=1.
NO_COMPILED = "" if os.environ.get("SVRT_TEST_COMPILED") == "1" else \
    "torch.compile takes minutes here; set SVRT_TEST_COMPILED=1 to run it"
# (name, precision, why it cannot run here or "")
BACKENDS = [
    ("torch-cpu", "fp32", ""),
    ("torch-compiled-cpu", "fp32", NO_COMPILED),
    ("onnxruntime-cpu", "fp32", ""),
    ("onnxruntime-cpu-fp16", "fp16", ""),
    ("torch-cuda", "fp32", NO_CUDA),
    ("onnxruntime-cuda", "fp32", _ort_cuda()),
    ("onnxruntime-cuda-fp16", "fp16", _ort_cuda()),
    ("tensorrt-fp16", "fp16", _tensorrt()),
]
PARAMS = [pytest.param(name, prec, marks=pytest.mark.skipif(bool(why), reason=f"{name}: {why}"), id=name)
          for name, prec, why in BACKENDS]

_ENGINES = {}


def make_engine(name: str, files):
    if name in _ENGINES:
        return _ENGINES[name]
    if name == "torch-cpu":
        e = load_engine(files["model"])
    elif name == "torch-compiled-cpu":
        e = load_engine(files["model"], compiled=True)
    elif name == "torch-cuda":
        e = load_engine(files["model"], device="cuda")
    elif name == "onnxruntime-cpu":
        e = load_engine(files["fp32"], threads=1)
    elif name == "onnxruntime-cpu-fp16":
        e = load_engine(files["fp16"], threads=1)
    elif name == "onnxruntime-cuda":
        e = load_engine(files["fp32"], device="cuda")
    elif name == "onnxruntime-cuda-fp16":
        e = load_engine(files["fp16"], device="cuda")
    elif name == "tensorrt-fp16":
        from svrt.emulator import load_model
        from svrt.export.tensorrt_build import export_tensorrt

        model, meta = load_model(files["model"])
        plan = files["folder"] / f"{INSTRUMENT}.plan"
        export_tensorrt(model, meta, INSTRUMENT, plan, precision="fp16", min_shape=(1, 16, 16),
                        opt_shape=(2, 64, 64), max_shape=(4, 128, 128))
        e = load_engine(plan, device="cuda")
    else:  # pragma: no cover
        raise KeyError(name)
    _ENGINES[name] = e
    return e


@pytest.fixture(scope="module")
def reference(files):
    from svrt.runtime.backends.torch_backend import TorchEngine

    return TorchEngine.load(files["model"])


def rel(a, b):
    return ((a.cpu().double() - b.cpu().double()).abs().max() / b.cpu().double().abs().max()).item()


def l2(a, b):
    return ((a.cpu().double() - b.cpu().double()).norm() / b.cpu().double().norm()).item()


def inputs(kind: str, batch: int, size):
    if kind == "random":
        return random_inputs(batch, M, size, seed=batch)
    return solar_inputs(INSTRUMENT, batch, M, size, seed=batch)


def device_of(engine):
    """Where a test puts the inputs: the torch engines' own device (they expect inputs there); the
    other engines take CPU tensors (and CUDA tensors) and return results on the inputs' device."""
    return engine.device if engine.identity.backend.startswith("torch") else torch.device("cpu")


# --------------------------------------------------------------------------- agreement with torch FP32

@pytest.mark.parametrize("name,precision", PARAMS)
@pytest.mark.parametrize("kind", ["random", "solar"])
@pytest.mark.parametrize("batch,size", [(1, (32, 32)), (3, (48, 64)), (2, (40, 56))])
def test_forward_and_gradient_agree_with_torch(name, precision, kind, batch, size, files, reference):
    engine = make_engine(name, files)
    obj, modes = inputs(kind, batch, size)
    g = torch.randn(obj.shape, generator=torch.Generator().manual_seed(7))
    ref_out = reference.forward(obj, modes, INSTRUMENT)
    ref_go, ref_gm = reference.vjp(obj, modes, INSTRUMENT, g)
    dev = device_of(engine)
    out = engine.forward(obj.to(dev), modes.to(dev), INSTRUMENT)
    go, gm = engine.vjp(obj.to(dev), modes.to(dev), INSTRUMENT, g.to(dev))
    assert out.shape == obj.shape and go.shape == obj.shape and gm.shape == modes.shape
    if precision == "fp32":
        assert rel(out, ref_out) < 1e-5
        for grad, ref in ((go, ref_go), (gm, ref_gm)):
            assert l2(grad, ref) < 1e-4 and rel(grad, ref) < 1e-3
    else:
        assert rel(out, ref_out) < 1e-2
        assert rel(go, ref_go) < 1e-2
        assert l2(gm, ref_gm) < 0.2


@pytest.mark.parametrize("name,precision", PARAMS)
def test_mse_gradient_and_autograd_apply(name, precision, files, reference):
    engine = make_engine(name, files)
    dev = device_of(engine)
    obj, modes = inputs("solar", 2, (32, 48))
    observed = reference.forward(obj * 1.01, modes * 0.9, INSTRUMENT)
    loss, out, go, gm = engine.mse_gradient(obj.to(dev), modes.to(dev), INSTRUMENT, observed.to(dev))
    o, m = obj.clone().requires_grad_(True), modes.clone().requires_grad_(True)
    ref_loss = ((reference.apply(o, m, INSTRUMENT) - observed) ** 2).sum()
    ref_loss.backward()
    tol = 1e-5 if precision == "fp32" else 5e-2
    assert abs(loss.item() - ref_loss.item()) <= tol * ref_loss.item()
    assert rel(go, o.grad) < (1e-3 if precision == "fp32" else 5e-2)
    # Engine.apply: the same gradient through ordinary autograd
    o2, m2 = obj.to(dev).requires_grad_(True), modes.to(dev).requires_grad_(True)
    ((engine.apply(o2, m2, INSTRUMENT) - observed.to(dev)) ** 2).sum().backward()
    assert rel(o2.grad, go) < 1e-5 and rel(m2.grad, gm) < 1e-5


@pytest.mark.parametrize("name,precision", PARAMS)
def test_gradient_agrees_with_finite_differences(name, precision, files):
    engine = make_engine(name, files)
    t = 1e-3 if precision == "fp32" else 1e-2
    for seed in range(2):
        obj, modes = solar_inputs(INSTRUMENT, 1, M, (32, 32), seed=seed)
        gen = torch.Generator().manual_seed(11 + seed)
        w = torch.randn(obj.shape, generator=gen)
        dev = device_of(engine)
        go, gm = engine.vjp(obj.to(dev), modes.to(dev), INSTRUMENT, w.to(dev))
        go, gm = go.cpu(), gm.cpu()

        def loss(o, m):
            return (w.double() * engine.forward(o.to(dev), m.to(dev), INSTRUMENT).cpu().double()).sum().item()

        # the object and the modes separately (the modes' gradient is ~100x smaller); each direction is
        # the computed gradient with random positive weights, largest step t
        for grad, in_obj in ((go, True), (gm, False)):
            v = grad.cpu() / grad.abs().max().cpu() * (1 + 0.5 * torch.rand(grad.shape, generator=gen))
            if in_obj:
                fd = (loss(obj + t * v, modes) - loss(obj - t * v, modes)) / (2 * t)
            else:
                fd = (loss(obj, modes + t * v) - loss(obj, modes - t * v)) / (2 * t)
            analytic = (grad.cpu().double() * v.double()).sum().item()
            assert abs(fd - analytic) <= (1e-2 if precision == "fp32" else 3e-2) * abs(analytic), (in_obj, fd, analytic)


def test_onnxruntime_engine_identity_and_dispatch(files):
    engine = load_engine(files["fp32"])
    assert type(engine).__name__ == "OnnxRuntimeEngine"
    i = engine.identity
    assert (i.backend, i.device, i.precision, i.instruments, i.n_modes) == (
        "onnxruntime",
        "cpu",
        "fp32",
        [INSTRUMENT],
        M,
    )
    assert i.model == "tiny" and i.model_hash == json.loads(files["model"].with_suffix(".json").read_text())["sha256"]
    assert "CPUExecutionProvider" in i.extra["providers"] and i.extra["vjp_graph"].endswith(".vjp.onnx")
    assert load_engine(files["fp16"]).identity.precision == "fp16"
    assert "onnxruntime" in repr(engine)


# --------------------------------------------------------------------------- clear failures

def test_forward_for_another_instrument_is_refused(files):
    engine = load_engine(files["fp32"])
    obj, modes = random_inputs(1, M, 32)
    with pytest.raises(SvrtError, match=r"built for crisp8542, not 'crisp6302'"):
        engine.forward(obj, modes, "crisp6302")
    with pytest.raises(SvrtError, match="exported for crisp8542, not 'hifi6563'"):
        load_engine(files["fp32"], instrument="hifi6563")
    assert load_engine(files["fp32"], instrument="CRISP8542").instruments == [INSTRUMENT]


def test_other_number_of_modes_is_refused(files):
    engine = load_engine(files["fp32"])
    obj, modes = random_inputs(1, M + 1, 32)
    with pytest.raises(SvrtError, match=f"built for {M} modes; got {M + 1}"):
        engine.forward(obj, modes, INSTRUMENT)
    with pytest.raises(SvrtError, match=f"exported for {M} modes, not 44"):
        load_engine(files["fp32"], n_modes=44)
    with pytest.raises(SvrtError, match="fp32 graph, not fp16"):
        load_engine(files["fp32"], precision="fp16")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupted_onnx_is_refused(files, tmp_path, damage):
    data = files["fp32"].read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x00not an onnx file" * 50, "empty": b""}[damage]
    )
    with pytest.raises(SvrtError) as exc:
        load_engine(bad)
    msg = str(exc.value)
    assert "bad.onnx" in msg and ("not a readable ONNX graph" in msg or "metadata key" in msg)
    assert "\n" not in msg


def test_missing_file_and_foreign_onnx_are_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(SvrtError, match="not found"):
        load_engine(tmp_path / "nothing.onnx")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    with pytest.raises(SvrtError, match="metadata key 'graph' missing; expected a graph written by 'svrt export'"):
        load_engine(foreign)


def test_vjp_graph_problems(files, tmp_path):
    import shutil

    with pytest.raises(SvrtError, match="is a gradient \\(VJP\\) graph"):
        load_engine(files["fp32"].with_name(files["fp32"].stem + ".vjp.onnx"))
    engine = load_engine(files["novjp"])
    obj, modes = random_inputs(1, M, 32)
    engine.forward(obj, modes, INSTRUMENT)
    with pytest.raises(SvrtError, match="no VJP graph .*--vjp"):
        engine.vjp(obj, modes, INSTRUMENT, torch.ones_like(obj))
    # a VJP graph of another instrument beside the forward graph
    shutil.copy(files["fp32"], tmp_path / "mixed.onnx")
    shutil.copy(files["other"].with_name("hifi.vjp.onnx"), tmp_path / "mixed.vjp.onnx")
    with pytest.raises(SvrtError, match="mixed.vjp.onnx: metadata key 'instrument' is 'hifi6563'"):
        load_engine(tmp_path / "mixed.onnx")


def test_missing_onnxruntime_says_what_to_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(SvrtError, match="pip install onnxruntime"):
        load_engine(files["fp32"])


def test_onnxruntime_cuda_without_provider_says_what_to_install(files):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(SvrtError, match="pip install onnxruntime-gpu"):
        load_engine(files["fp32"], device="cuda")


def test_missing_tensorrt_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SvrtError, match="pip install tensorrt"):
        load_engine(tmp_path / "x.plan")


# --------------------------------------------------------------------------- TensorRT metadata checks (CPU)

def _fake_plan(tmp_path, **changes):
    from svrt.runtime.backends.tensorrt_backend import plan_metadata_path

    meta = {"graph": "forward", "instrument": INSTRUMENT, "n_modes": M, "precision": "fp16", "model_hash": "abc",
            "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.9.0.34",
            "profile": {"min": [1, 64, 64], "opt": [1, 256, 256], "max": [4, 1024, 1024]}}
    meta.update(changes)
    plan = tmp_path / "crisp8542.plan"
    plan.write_bytes(b"fake plan")
    plan_metadata_path(plan).write_text(json.dumps(meta))
    return plan


HERE = {"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt_version": "10.9.0.34"}


def test_plan_checks_accept_a_matching_plan(tmp_path):
    from svrt.runtime.backends.tensorrt_backend import check_plan_metadata, profile_ok, read_plan_metadata

    plan = _fake_plan(tmp_path)
    meta = read_plan_metadata(plan)
    check_plan_metadata(meta, plan, instrument="CRISP8542", n_modes=M, **HERE)
    assert profile_ok(meta["profile"], (2, 512, 512)) and not profile_ok(meta["profile"], (8, 512, 512))


@pytest.mark.parametrize("changes,kwargs,expected", [
    ({"tensorrt_version": "8.6.1"}, {}, "built with TensorRT 8.6.1, but this machine has TensorRT 10.9.0.34; rebuild"),
    ({"gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}, {},
     "built for a NVIDIA A100-SXM4-40GB \\(compute capability 8.0\\), not for this NVIDIA H100 80GB HBM3"),
    ({"gpu_name": "NVIDIA H100 PCIe"}, {}, "built for a NVIDIA H100 PCIe"),
    ({}, {"instrument": "crisp6302"}, "built for crisp8542, not 'crisp6302'"),
    ({}, {"n_modes": 44}, f"built for {M} modes, not 44"),
    ({"graph": "vjp"}, {}, "key 'graph' is 'vjp'"),
])
def test_plan_checks_refuse_other_gpu_version_instrument_modes(tmp_path, changes, kwargs, expected):
    from svrt.runtime.backends.tensorrt_backend import check_plan_metadata, read_plan_metadata

    plan = _fake_plan(tmp_path, **changes)
    with pytest.raises(SvrtError, match=expected) as exc:
        check_plan_metadata(read_plan_metadata(plan), plan, **kwargs, **HERE)
    assert "\n" not in str(exc.value)


def test_plan_metadata_missing_or_broken(tmp_path):
    from svrt.runtime.backends.tensorrt_backend import check_plan_metadata, plan_metadata_path, read_plan_metadata

    plan = tmp_path / "p.plan"
    plan.write_bytes(b"x")
    with pytest.raises(SvrtError, match="p.plan.json: TensorRT plan metadata not found"):
        read_plan_metadata(plan)
    plan_metadata_path(plan).write_text("{broken")
    with pytest.raises(SvrtError, match="not readable JSON"):
        read_plan_metadata(plan)
    with pytest.raises(SvrtError, match="key 'gpu_name' missing"):
        check_plan_metadata({"graph": "forward", "instrument": "x", "n_modes": 1, "precision": "fp16"}, plan, **HERE)


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_tensorrt()), reason=f"TensorRT engine: {_tensorrt()}")
def test_tensorrt_engine_refuses_a_plan_for_another_gpu(files, tmp_path):
    make_engine("tensorrt-fp16", files)  # builds the plan
    plan = files["folder"] / f"{INSTRUMENT}.plan"
    from svrt.runtime.backends.tensorrt_backend import plan_metadata_path

    meta = json.loads(plan_metadata_path(plan).read_text())
    meta["gpu_name"] = "Some Other GPU"
    other = tmp_path / "other.plan"
    other.write_bytes(plan.read_bytes())
    plan_metadata_path(other).write_text(json.dumps(meta))
    with pytest.raises(SvrtError, match="not for this"):
        load_engine(other, device="cuda")
    engine = make_engine("tensorrt-fp16", files)
    assert engine.identity.backend == "tensorrt" and engine.identity.device.startswith("cuda")
    with pytest.raises(SvrtError, match="from 1x16x16 to 4x128x128"):
        engine.forward(*random_inputs(5, M, 32), INSTRUMENT)


# --------------------------------------------------------------------------- svrt engines

def test_engines_command_lists_backends_and_devices():
    from click.testing import CliRunner

    from svrt.runtime.inventory import engines_command

    r = CliRunner().invoke(engines_command, [])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    for name in ("torch", "torch-compiled", "onnxruntime", "tensorrt", "cpu", "gpu"):
        assert any(line.split()[0] == name for line in lines), name
    assert torch.__version__ in r.output
    trt_line = next(line for line in lines if line.startswith("tensorrt"))
    if "missing" in trt_line:
        assert "pip install tensorrt" in trt_line
    rows = json.loads(CliRunner().invoke(engines_command, ["--json"]).output)
    assert {row["name"] for row in rows} >= {"torch", "onnxruntime", "tensorrt"}
    ort_row = next(row for row in rows if row["name"] == "onnxruntime")
    assert "CPUExecutionProvider" in ort_row["detail"] and "cpu" in ort_row["devices"]
