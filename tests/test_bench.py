"""Tests of svrt.benchmarks: the timing helper, the FLOP counter, and the quick benchmark end to end on
tiny sizes (through the Python API and the CLI). No timing thresholds: timings are not tested."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from svrt.benchmarks import timing
from svrt.benchmarks.roofline import EmulatorCostModel, count_bytes, count_macs
from svrt.emulator import SVCE, EmulatorConfig
from svrt.errors import SvrtError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- timing helper

class FakeClock:
    """perf_counter that advances only when the timed function runs, by scripted durations."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, list(durations), 0

    def perf_counter(self):
        return self.now

    def work(self):
        self.now += self.durations[self.calls]
        self.calls += 1


def test_measure_reports_median_of_the_repeats(monkeypatch):
    # 2 warm-up calls (10 s each, ignored) then 5 timed calls
    clock = FakeClock([10.0, 10.0, 0.3, 0.1, 0.5, 0.2, 0.4])
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    t = timing.measure(clock.work, warmup=2, repeats=5, device="cpu")
    assert clock.calls == 7
    assert t.times == pytest.approx([0.3, 0.1, 0.5, 0.2, 0.4])
    assert t.median == pytest.approx(0.3)
    assert t.minimum == pytest.approx(0.1)
    assert (t.q1, t.q3) == (pytest.approx(0.2), pytest.approx(0.4))
    assert t.iqr == pytest.approx(0.2)
    assert t.repeats == 5 and t.warmup == 2 and t.timer == "perf_counter"


def test_measure_inner_calls_and_even_repeats(monkeypatch):
    clock = FakeClock([1.0] * 2 + [3.0] * 2 + [2.0] * 2 + [4.0] * 2)
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    t = timing.measure(clock.work, warmup=0, repeats=4, inner=2)
    assert t.times == pytest.approx([1.0, 3.0, 2.0, 4.0])     # per call: each sample divided by inner
    assert t.median == pytest.approx(2.5)
    with pytest.raises(ValueError):
        timing.measure(clock.work, repeats=0)


# --------------------------------------------------------------------------- FLOP counter

def hand_count_width2_16x16() -> tuple[int, int]:
    """Conv and linear MACs of the SVCE with C = 2, M = 44, 4 instruments on a 16 x 16 image, by hand:
    sum of cin x cout x k^2 x (output pixels) over the convolutions, in x out over the FiLM's linears."""
    c = 2
    px = {0: 256, 1: 64, 2: 16, 3: 4, 4: 1}               # pixels at each level (2x2 pooling between)
    convs = [  # (cin, cout, kernel, level)
        (45, c, 3, 0), (c, c, 3, 0),                       # encoder level 0: obj + 44 modes -> C
        (c, 2 * c, 3, 1), (2 * c, 2 * c, 3, 1),
        (2 * c, 4 * c, 3, 2), (4 * c, 4 * c, 3, 2),
        (4 * c, 8 * c, 3, 3), (8 * c, 8 * c, 3, 3),
        (8 * c, 8 * c, 3, 4), (8 * c, 8 * c, 3, 4),        # bottleneck 8C
        (16 * c, 8 * c, 3, 3), (8 * c, 4 * c, 3, 3),       # decoder: skip (8C) + upsampled (8C) -> 8C -> 4C
        (8 * c, 4 * c, 3, 2), (4 * c, 2 * c, 3, 2),
        (4 * c, 2 * c, 3, 1), (2 * c, c, 3, 1),
        (2 * c, c, 3, 0), (c, c, 3, 0),
        (c, 1, 1, 0),                                      # 1x1 head
    ]
    conv = sum(cin * cout * k * k * px[level] for cin, cout, k, level in convs)
    linear = 4 * 64 + 64 * 64 + 64 * 2                     # FiLM: one-hot(4) -> 64 -> 64 -> 2
    return conv, linear


def test_flop_counter_matches_a_hand_count():
    model = SVCE(EmulatorConfig(width=2)).eval()
    obj, modes = torch.rand(1, 1, 16, 16), torch.randn(1, 44, 16, 16)
    count = count_macs(model, obj, modes, model.one_hot("crisp8542"))
    conv, linear = hand_count_width2_16x16()
    assert count.conv_macs == conv == 359_936
    assert count.linear_macs == linear
    assert count.flops == 2 * (conv + linear)
    assert len([layer for layer in count.layers if layer.kind == "conv"]) == 19
    # the cost model scales the per-pixel count: a batch of 3 images of 32 x 32
    cost = EmulatorCostModel(model, "crisp8542", probe=16).cost(32, batch=3)
    assert cost.flops == pytest.approx(2 * 3 * (4 * conv + linear))


def test_byte_counter_counts_reads_and_writes():
    a, b = torch.ones(1000), torch.ones(1000)
    counted, out = count_bytes(lambda: (a + b).view(10, 100))
    assert out.shape == (10, 100)
    assert counted.bytes["memory"] == 3 * 4000          # two inputs read, one output written; the view is free
    assert counted.ops["memory"] == 1


# --------------------------------------------------------------------------- end to end

def tiny_settings(**over):
    from svrt.benchmarks.suite import BenchSettings

    # one thread: on a busy 2-core machine two OpenMP threads stall each other for seconds
    base = dict(sizes=(32, 48), batches=(1, 2), exact_sizes=(32,), repeats=2, warmup=1,
                backends=("torch", "onnxruntime"), restoration=((32, 2, 2, 4),), iterations=2,
                peak_n=256, bandwidth_mb=8, threads=1)
    base.update(over)
    return BenchSettings(**base)


def test_quick_benchmark_python_api(tmp_path):
    from svrt.benchmarks.suite import run_benchmark

    lines = []
    threads = torch.get_num_threads()
    result = run_benchmark(tmp_path, settings=tiny_settings(), progress=False, echo=lines.append)
    assert torch.get_num_threads() == threads                 # restored after the run
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert data["schema"] == "svrt-bench/1"
    for key in ("cpu", "cpu_count", "torch_threads"):
        assert key in data["machine"]
    assert {"torch", "numpy", "python"} <= set(data["versions"])
    assert "command" in data and "created" in data
    if data["model"]["random_init"]:
        assert any("random" in n for n in data["notes"])
    records = data["records"]
    conv = {(r["method"], r["backend"], r["size"], r["batch"]): r for r in records if r["kind"] == "convolution"}
    backends = ["torch"] + (["onnxruntime"] if any(e["backend"] == "onnxruntime" and not e["skip"]
                                                  for e in data["engines"]) else [])
    for backend in backends:
        for size in (32, 48):
            for batch in (1, 2):
                r = conv[("emulator", backend, size, batch)]
                assert r["measured"] and r["repeats"] == 2
                assert r["per_image_s"] == pytest.approx(r["median_s"] / batch)
                assert r["flops"] > 0 and r["peak_fraction"] > 0 and r["roofline_s"] > 0
    assert conv[("exact", "torch", 32, 1)]["measured"]
    extrapolated = conv[("exact", "torch", 48, 1)]
    assert not extrapolated["measured"] and extrapolated["extrapolated_from"] == 32
    assert extrapolated["per_pixel_s"] == pytest.approx(conv[("exact", "torch", 32, 1)]["per_pixel_s"])
    assert conv[("overlap-add", "torch", 32, 1)]["measured"] and conv[("overlap-add", "torch", 48, 1)]["measured"]
    for r in records:  # every record says what it was
        for key in ("kind", "method", "backend", "device", "precision", "size"):
            assert key in r
    rest = [r for r in records if r["kind"] == "restoration"]
    if any(s["what"] == "restoration benchmark" for s in data["skipped"]):
        assert not rest
    else:
        assert {r["backend"] for r in rest} >= {"torch"}
        for r in rest:
            assert r["per_iteration_s"] > 0 and r["peak_mb"] > 0 and r["memory_kind"]
    assert data["peaks"]["matmul_fp32"]["flops_per_s"] > 0 and data["peaks"]["bandwidth"]["bytes_per_s"] > 0
    assert [s["size"] for s in data["speedups"]] == [32, 48]
    text = "\n".join(lines)
    assert "ms/image" in text and "exact" in text and "extrapolated" in text
    assert result["files"] == [str(tmp_path / "bench.json"), str(tmp_path / "bench.png")]


def test_quick_benchmark_cli_and_results_page(tmp_path):
    from svrt.cli import cli

    out, page = tmp_path / "out", tmp_path / "RESULTS.md"
    args = ["bench", "--out-dir", str(out), "--sizes", "32", "--batches", "1", "--repeats", "1", "--warmup", "0",
            "--restoration", "none", "--backends", "torch", "--no-progress", "--results-page", str(page),
            "--label", "test-machine", "--threads", "1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "bench.json").read_text())
    assert data["command"].startswith("svrt bench --out-dir")
    assert "--sizes 32" in data["command"]
    methods = {(r["method"], r["size"]) for r in data["records"]}
    assert methods == {("emulator", 32), ("exact", 32), ("overlap-add", 32)}
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    text = page.read_text()
    assert "## test-machine" in text and data["command"] in text and "| method |" in text
    assert "ms/image" in res.output


def test_results_page_keeps_one_section_per_machine(tmp_path):
    from svrt.benchmarks.report import update_results_page

    page = tmp_path / "RESULTS.md"
    page.write_text("# results\n\nhand-written introduction\n")

    def result(label, command):
        return {"label": label, "command": command, "created": "now", "records": [], "machine": {"cpu": "x"}}

    update_results_page(page, result("m1", "svrt bench --first"))
    update_results_page(page, result("m2", "svrt bench --other"))
    update_results_page(page, result("m1", "svrt bench --second"))
    text = page.read_text()
    assert text.count("## m1") == 1 and text.count("## m2") == 1
    assert "--second" in text and "--first" not in text and "hand-written introduction" in text


def test_bad_options_are_one_sentence_errors(tmp_path):
    from svrt.cli import cli

    res = CliRunner().invoke(cli, ["bench", "--out-dir", str(tmp_path), "--backends", "torch,cuda-magic"])
    assert res.exit_code != 0 and isinstance(res.exception, SvrtError)
    assert "unknown back end" in str(res.exception)
    res = CliRunner().invoke(cli, ["bench", "--out-dir", str(tmp_path), "--restoration", "128x4"])
    assert isinstance(res.exception, SvrtError)


def test_unknown_model_is_an_error_not_a_fallback():
    from svrt.benchmarks.engines import benchmark_model

    with pytest.raises(SvrtError):
        benchmark_model("no-such-model")


def test_evidence_command_writes_table_json_and_png(tmp_path):
    """The evidence run end to end on a tiny case (exact optics, 2 iterations): one row per seed, the
    three methods, a summary that counts wins, and the PNG."""
    from svrt.benchmarks.evidence import evidence_command

    res = CliRunner().invoke(evidence_command, ["--backend", "psf-interpolation", "--seeds", "1,2", "--size", "32",
                                                "--frames", "2", "--grid", "16", "--iterations", "2",
                                                "--out-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "evidence.json").read_text())
    assert [c["seed"] for c in report["cases"]] == [1, 2]
    assert set(report["cases"][0]["figures"]) == {"average", "P=16", "P=0", "truth"}
    s = report["summary"]
    assert s["n_cases"] == 2
    for metric in ("nmse_variance_registered", "nmse_variance", "spectral_distance"):
        assert 0 <= s[metric]["sv_beats_average"] <= 2 and 0 <= s[metric]["sv_beats_invariant"] <= 2
        assert all(np.isfinite(v) and v > 0 for v in s[metric]["mean"].values())
    fig = report["cases"][0]["figures"]["P=16"]
    assert (
        fig["nmse_variance_registered"][0] <= fig["nmse_variance"][0] * 1.05
    )  # registration can only help (up to resampling)
    assert "| 1 |" in res.output and "| 2 |" in res.output
    assert (tmp_path / "evidence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
