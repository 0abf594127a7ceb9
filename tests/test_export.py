"""svrt.export: BatchNorm folding, the explicit VJP, the ONNX graphs (forward, VJP, FP32, FP16), the
TensorRT builder's helpers and ``svrt export``.

Tolerances (relative = max |test - ref| / max |ref|):

- the PyTorch graphs against autograd in float64: 1e-10 (same arithmetic, different order);
- FP32 ONNX Runtime against PyTorch FP32, forward: 1e-5. Both round each operation to 2^-24 ~ 6e-8;
  summation order differs in ~20 convolutions of up to 9 x 16C terms, so errors of a few 1e-7 are
  expected (measured ~4e-7) and 1e-5 leaves margin without hiding a wrong operator (O(1e-2..1));
- FP32 gradients: 1e-4 in L2 and 1e-3 max-relative. Rounding alone gives ~1e-6, but the gradient of
  a ReLU/max-pool network is discontinuous: where a pre-activation is within rounding of zero, or a
  max-pool window has a near-tie, two FP32 implementations may decide differently and the gradient
  jumps in a small patch (seen once in these tests: torch FP32, not ONNX Runtime, was the one off
  float64, by 8e-5 max / 2e-5 L2). The float64 test below checks the VJP itself to 1e-10;
- FP16 forward: 1e-2. Half precision rounds to 2^-11 ~ 4.9e-4; after ~20 layers the U-Net's output
  is off by ~1e-3 relative, and the normalisation and residual stay in FP32;
- FP16 gradients against the FP16 graph's own autograd: 1e-2 (same decisions, rounding only);
  against FP32: 1e-2 for d/d obj, and 0.2 in L2 for d/d modes, because in a ReLU/max-pool network
  FP16 rounding flips the sign of a few pre-activations (and a few max-pool winners) per 1e4, and
  each flip moves a whole gradient entry: the L2 error grows like sqrt(flips x layers). Measured
  3-10% for width 4-8 (FP16 arithmetic alone, with FP32 masks: ~2e-3); d/d obj is dominated by the
  FP32 residual and normalisation paths and stays ~1e-3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svrt.emulator import save_model
from svrt.errors import SvrtError
from svrt.export.graphs import ForwardGraph, VJPGraph, fold_batchnorm, maxpool2x_adjoint, upsample2x, upsample2x_adjoint
from svrt.export.inputs import random_inputs, solar_inputs
from svrt.export.testing import tiny_model

INSTRUMENT = "crisp8542"
M = 6




@pytest.fixture(scope="module")
def model():
    return tiny_model(width=4, n_modes=M)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, model)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_file):
    from svrt.export.onnx_export import export_onnx

    out = {}
    folder = tmp_path_factory.mktemp("onnx")
    for precision in ("fp32", "fp16"):
        out[precision] = export_onnx(model_file, folder / f"{INSTRUMENT}-{precision}.onnx", INSTRUMENT,
                                     precision=precision, check=True, check_size=32)
    return out


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def autograd(model, obj, modes, grad_out, instrument=INSTRUMENT):
    o, m = obj.clone().requires_grad_(True), modes.clone().requires_grad_(True)
    cond = model.one_hot(instrument, obj.shape[0], dtype=obj.dtype)
    out = model(o, m, cond)
    go, gm = torch.autograd.grad(out, (o, m), grad_out)
    return out.detach(), go, gm


# --------------------------------------------------------------------------- PyTorch graphs

def test_fold_batchnorm_equals_unfolded(model):
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original must not change"
    obj, modes = random_inputs(2, M, (32, 48), seed=1)
    cond = model.one_hot(INSTRUMENT, 2)
    with torch.no_grad():
        assert rel(folded(obj, modes, cond), model(obj, modes, cond)) < 1e-6


def test_upsample_adjoint_is_the_transpose():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    up = upsample2x(x)
    ref = F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False)
    assert torch.equal(up, ref)
    w = torch.randn(up.shape, dtype=torch.float64, generator=g)
    (expected,) = torch.autograd.grad(up, x, w)
    assert rel(upsample2x_adjoint(w), expected) < 1e-12


def test_maxpool_adjoint_routes_like_torch_with_ties():
    g = torch.Generator().manual_seed(0)
    # ReLU output quantised to a few levels: many ties (zeros and equal positives) in the 2x2 windows
    x = torch.relu(torch.randint(-2, 3, (2, 3, 8, 12), generator=g).double()).requires_grad_(True)
    w = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=g)
    (expected,) = torch.autograd.grad(F.max_pool2d(x, 2), x, w)
    assert torch.equal(maxpool2x_adjoint(x.detach(), w), expected)


@pytest.mark.parametrize("normalize,residual,normalization", [
    (True, True, "centred-p8"), (False, True, "centred-p8"), (True, False, "centred-p8"), (False, False, "centred-p8"),
    (True, True, "p8"), (True, False, "p8")])
def test_graphs_match_autograd_in_float64(normalize, residual, normalization):
    model = tiny_model(width=4, n_modes=M, seed=2, normalize=normalize, residual=residual,
                       normalization=normalization).double()
    obj, modes = random_inputs(2, M, (32, 48), seed=3)
    obj, modes = obj.double(), modes.double()
    g = torch.randn(obj.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out, go, gm = autograd(model, obj, modes, g)
    fwd, vjp = ForwardGraph(model, INSTRUMENT), VJPGraph(model, INSTRUMENT)
    with torch.no_grad():
        assert rel(fwd(obj, modes), out) < 1e-10
        vo, vm = vjp(obj, modes, g)
    assert rel(vo, go) < 1e-10
    assert rel(vm, gm) < 1e-10


def test_vjp_of_a_flat_object_is_finite_and_matches_autograd():
    """A flat object is all zero once centred: the 8-norm's gradient must stay finite (and exact)."""
    model = tiny_model(width=4, n_modes=M, seed=2).double()
    _, modes = random_inputs(1, M, 32, seed=3)
    obj = torch.full((1, 1, 32, 32), 0.7, dtype=torch.float64)
    g = torch.randn(obj.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out, go, gm = autograd(model, obj, modes.double(), g)
    with torch.no_grad():
        vo, vm = VJPGraph(model, INSTRUMENT)(obj, modes.double(), g)
    assert torch.isfinite(vo).all() and torch.isfinite(vm).all()
    assert rel(vo, go) < 1e-10 and rel(vm, gm) < 1e-10


def test_graph_folds_the_instrument(model):
    obj, modes = random_inputs(1, M, 32)
    a = ForwardGraph(model, "crisp8542")(obj, modes)
    b = ForwardGraph(model, "hifi6563")(obj, modes)
    assert rel(a, b) > 1e-4, "different instruments must give different graphs"
    with pytest.raises(SvrtError, match="not 'nosuch'"):
        ForwardGraph(model, "nosuch")


def test_fp16_graphs_in_torch(model):
    obj, modes = solar_inputs(INSTRUMENT, 2, M, 64)
    g = torch.randn(obj.shape, generator=torch.Generator().manual_seed(5))
    out, go, gm = autograd(model, obj, modes, g)
    f16, v16 = ForwardGraph(model, INSTRUMENT, "fp16"), VJPGraph(model, INSTRUMENT, "fp16")
    assert rel(f16(obj, modes), out) < 1e-2
    o, m = obj.clone().requires_grad_(True), modes.clone().requires_grad_(True)
    own = torch.autograd.grad(f16(o, m), (o, m), g)
    vo, vm = v16(obj, modes, g)
    assert rel(vo, own[0]) < 1e-2 and rel(vm, own[1]) < 1e-2
    assert rel(vo, go) < 1e-2 and l2(vm, gm) < 0.2
    # tiny upstream gradients do not underflow in FP16 (per-sample rescaling)
    vo_small, vm_small = v16(obj, modes, g * 1e-9)
    assert rel(vo_small, go * 1e-9) < 1e-2 and l2(vm_small, gm * 1e-9) < 0.2


# --------------------------------------------------------------------------- ONNX files

def test_onnx_files_checker_metadata_and_dynamic_axes(exported, model_file):
    import onnx

    from svrt.export.onnx_export import METADATA_KEYS

    result = exported["fp32"]
    assert len(result.files) == 2 and result.files[1].endswith(".vjp.onnx")
    for path, graph in zip(result.files, ("forward", "vjp")):
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert set(METADATA_KEYS) <= set(meta)
        assert meta["graph"] == graph and meta["instrument"] == INSTRUMENT and meta["n_modes"] == str(M)
        assert meta["precision"] == "fp32" and meta["multiple"] == "16"
        assert meta["model_hash"] == json.loads(model_file.with_suffix(".json").read_text())["sha256"]
        assert proto.opset_import[0].version >= 17
        ops = {n.op_type for n in proto.graph.node}
        assert "BatchNormalization" not in ops and "Conv" in ops
        names = [i.name for i in proto.graph.input]
        assert names == (["obj", "modes"] if graph == "forward" else ["obj", "modes", "grad_out"])
        for tensor in list(proto.graph.input) + list(proto.graph.output):
            dims = tensor.type.tensor_type.shape.dim
            assert [d.dim_param for d in dims[:1] + dims[2:]] == ["batch", "height", "width"]
            assert tensor.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    fp16 = onnx.load(exported["fp16"].files[0])
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in fp16.graph.initializer)


def test_export_check_report_meets_tolerances(exported):
    for kind in ("random", "solar"):
        entry = exported["fp32"].checks[kind]
        assert entry["forward"]["max_rel"] < 1e-5
        for name in ("grad_obj", "grad_modes"):
            assert entry[name]["l2_rel"] < 1e-4 and entry[name]["max_rel"] < 1e-3
        e16 = exported["fp16"].checks[kind]
        assert e16["forward"]["max_rel"] < 1e-2
        assert e16["grad_obj"]["max_rel"] < 1e-2 and e16["grad_modes"]["l2_rel"] < 0.2


def test_export_refuses_non_onnx_name_and_old_opset(model_file, tmp_path):
    from svrt.export.onnx_export import export_onnx

    with pytest.raises(SvrtError, match=r"\.onnx"):
        export_onnx(model_file, tmp_path / "x.txt", INSTRUMENT)
    with pytest.raises(SvrtError, match="opset 13"):
        export_onnx(model_file, tmp_path / "x.onnx", INSTRUMENT, opset=13)
    assert not list(tmp_path.iterdir())


def test_failed_check_writes_nothing(model_file, tmp_path, monkeypatch):
    from svrt.export import onnx_export

    monkeypatch.setitem(onnx_export.REFUSE_RELATIVE, "fp32", 0.0)
    with pytest.raises(SvrtError, match="nothing was written"):
        onnx_export.export_onnx(model_file, tmp_path / "x.onnx", INSTRUMENT, check_size=32, check_batch=1)
    assert not list(tmp_path.iterdir()), "outputs are atomic: no partial or temporary files"


# --------------------------------------------------------------------------- command line

def test_cli_export_writes_and_reports(model_file, tmp_path):
    from click.testing import CliRunner

    from svrt.export.cli import export_command

    out = tmp_path / "c.onnx"
    r = CliRunner().invoke(export_command, [str(model_file), "-o", str(out), "--instrument", INSTRUMENT,
                                            "--check-size", "32"])
    assert r.exit_code == 0, r.output
    assert out.exists() and (tmp_path / "c.vjp.onnx").exists()
    assert "wrote" in r.output and "max rel" in r.output and "grad_modes" in r.output and "solar" in r.output
    # no overwrite without --overwrite
    r = CliRunner().invoke(export_command, [str(model_file), "-o", str(out), "--instrument", INSTRUMENT])
    assert isinstance(r.exception, SvrtError) and "already exists" in str(r.exception)
    r = CliRunner().invoke(export_command, [str(model_file), "-o", str(tmp_path / "n.onnx"), "--no-vjp", "--no-check",
                                            "--instrument", "hifi6563", "--fp16"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "n.onnx").exists() and not (tmp_path / "n.vjp.onnx").exists()


def test_cli_export_errors_are_one_sentence(model_file, tmp_path, capsys):
    from svrt.cli import main

    for args, expected in [(["--instrument", "nosuch"], "not 'nosuch'"),
                           (["--instrument", INSTRUMENT, "--tensorrt", "--min-shape", "1x60x64"], "multiples of 16")]:
        with pytest.raises(SystemExit) as exc:
            main(["export", str(model_file), "-o", str(tmp_path / "e.onnx"), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_cli_export_help_has_an_example():
    from click.testing import CliRunner

    from svrt.export.cli import export_command

    r = CliRunner().invoke(export_command, ["--help"])
    assert r.exit_code == 0 and "Example" in r.output and "svrt export" in r.output


# --------------------------------------------------------------------------- TensorRT builder helpers

def test_shape_parsing_and_profile():
    from svrt.export.tensorrt_build import check_profile, parse_shape

    assert parse_shape("2x256x512") == (2, 256, 512)
    assert parse_shape("1,64,64") == (1, 64, 64)
    for bad in ("2x250x256", "0x64x64", "64x64", "axbxc"):
        with pytest.raises(SvrtError):
            parse_shape(bad, "--max-shape")
    check_profile((1, 64, 64), (2, 128, 128), (4, 256, 256))
    with pytest.raises(SvrtError, match="min <= opt <= max"):
        check_profile((1, 64, 64), (8, 128, 128), (4, 256, 256))


def test_plan_metadata_roundtrips_through_the_runtime_checks(exported):
    import onnx

    from svrt.export.tensorrt_build import plan_metadata
    from svrt.runtime.backends.tensorrt_backend import check_plan_metadata

    onnx_meta = {p.key: p.value for p in onnx.load(exported["fp16"].files[0]).metadata_props}
    gpu = {"gpu_name": "NVIDIA Test GPU", "compute_capability": "9.0"}
    meta = plan_metadata(onnx_meta, gpu=gpu, tensorrt_version="10.9.0", min_shape=(1, 64, 64),
                         opt_shape=(1, 256, 256), max_shape=(4, 512, 512), strongly_typed=True)
    meta = json.loads(json.dumps(meta))  # what is written beside the plan
    check_plan_metadata(meta, "x.plan", tensorrt_version="10.9.0", instrument=INSTRUMENT, n_modes=M, **gpu)
    assert meta["precision"] == "fp16" and meta["profile"]["max"] == [4, 512, 512]


def _tensorrt_and_cuda() -> str:
    from svrt.runtime.backends.tensorrt_backend import unavailable_reason

    return unavailable_reason()


@pytest.mark.tensorrt
@pytest.mark.skipif(bool(_tensorrt_and_cuda()), reason=f"TensorRT plan build: {_tensorrt_and_cuda()}")
def test_tensorrt_build_plan(model, tmp_path):
    from svrt.export.tensorrt_build import export_tensorrt
    from svrt.runtime.backends.tensorrt_backend import plan_metadata_path, read_plan_metadata

    files = export_tensorrt(model, {"name": "tiny"}, INSTRUMENT, tmp_path / "c.plan", precision="fp16",
                            min_shape=(1, 32, 32), opt_shape=(2, 64, 64), max_shape=(3, 96, 96))
    assert len(files) == 4
    meta = read_plan_metadata(tmp_path / "c.plan")
    assert meta["instrument"] == INSTRUMENT and meta["graph"] == "forward" and meta["strongly_typed"]
    assert plan_metadata_path(tmp_path / "c.vjp.plan").exists()


# --------------------------------------------------------------------------- gradient paths

def test_compare_gradient_paths_reports_each_path(model_file):
    from svrt.export.gradient_paths import compare_gradient_paths

    r = compare_gradient_paths(model_file, size=32, batch=1, repeats=1, warmup=1, compiled=False, threads=1)
    assert r["paths"]["torch"]["seconds"] > 0 and r["paths"]["onnxruntime"]["seconds"] > 0
    assert r["fastest"] in r["paths"] and np.isfinite(r["paths"][r["fastest"]]["seconds"])
