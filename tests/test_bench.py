import json
import os

import numpy as np

import pytest

pytest.importorskip("torch", reason="torch not installed")
pytest.importorskip("onnx", reason="onnx not installed")

from edgecxr.bench.power import parse_tegrastats, read_ina3221  # noqa: E402

ORIN = ("11-26-2026 10:00:01 RAM 2317/30536MB (lfb 6634x4MB) CPU [3%@729,1%@729] EMC_FREQ 0% GR3D_FREQ 0% "
        "cpu@45.5C gpu@44.2C VDD_GPU_SOC 2395mW/2395mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2620mW/2620mW "
        "VDD_IN 5123mW/5120mW")
NANO = "RAM 1617/3956MB CPU [12%@1479,5%@1479] GR3D_FREQ 0% POM_5V_IN 2345/2301 POM_5V_GPU 0/0 POM_5V_CPU 422/400"


def test_tegrastats_parsing():
    assert parse_tegrastats(ORIN) == pytest.approx(5.123)
    assert parse_tegrastats(NANO) == pytest.approx(2.345)
    assert parse_tegrastats("RAM 1/2MB CPU [1%]") is None


def test_ina3221_sysfs(tmp_path):
    hw = tmp_path / "1-0040" / "hwmon" / "hwmon3"
    hw.mkdir(parents=True)
    (hw / "curr1_input").write_text("1000")  # mA
    (hw / "in1_input").write_text("5000")  # mV
    (hw / "curr2_input").write_text("200")
    (hw / "in2_input").write_text("5000")
    assert read_ina3221(tmp_path) == pytest.approx(6.0)
    assert read_ina3221(tmp_path / "nothing") is None


def test_bench_and_compare(tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from edgecxr.cli import app
    from edgecxr.resources import eval_dir

    r = CliRunner().invoke(app, ["bench", "--model", str(tiny_checkpoint), "--data", str(eval_dir()),
                                 "--targets", "torch-fp32,onnx-fp32,torch-fp16,tensorrt-int8", "--iters", "3",
                                 "--warmup", "1", "--seconds", "0", "--batch", "4", "--threads", "1", "--rounds", "2",
                                 "--out", str(tmp_path / "b"), "--exports", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = {x["target"]: x for x in run["rows"]}
    assert rows["torch-fp32"]["status"] == "ok" and rows["onnx-fp32"]["status"] == "ok"
    assert rows["onnx-fp32"]["agreement"] >= 0.99
    assert rows["torch-fp32"]["speedup_b1"] == pytest.approx(1.0)
    lat = rows["onnx-fp32"]["latency_b1"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["n"] >= 3
    assert rows["onnx-fp32"]["throughput"]["batch"] == 4
    assert rows["onnx-fp32"]["rounds"] == 2 and len(lat["p50_ms_rounds"]) == 2 and lat["p50_ms"] in lat["p50_ms_rounds"]
    assert min(rows["onnx-fp32"]["throughput"]["ms_per_image_rounds"]) <= rows["onnx-fp32"]["throughput"]["ms_per_image"]
    assert 10 < rows["onnx-fp32"]["peak_rss_mb"] < rows["torch-fp32"]["peak_rss_mb"] * 4
    assert rows["torch-fp16"]["status"] == "skipped"
    assert rows["tensorrt-int8"]["status"] == "skipped" and rows["tensorrt-int8"]["reason"]
    assert run["machine"]["cpu"]["model"]
    for f in ("bench.csv", "bench.md", "bench.png"):
        assert (tmp_path / "b" / f).stat().st_size > 100
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "confounded" in md
    # onnx-fp32 pools before its transitions' convs (export/onnx-fp32.toml): the row and the report say so, torch's not
    assert rows["onnx-fp32"]["rewrites"] == ["pool_first"] and "rewrites" not in rows["torch-fp32"]
    assert "- onnx-fp32: graph rewrites: transitions pool first" in md and "- torch-fp32" not in md
    r = CliRunner().invoke(app, ["bench", "compare", str(tmp_path / "b" / "bench.json"), str(tmp_path / "b" / "bench.json"),
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c" / "compare.png").is_file()


def test_openvino_throughput_mode(tiny_checkpoint, tmp_path):
    from edgecxr.backends import backend_available
    from edgecxr.export import core
    from edgecxr.runtime import load

    if not backend_available("openvino"):
        pytest.skip("OpenVINO is not installed (extra 'openvino')")
    res = core.export(tiny_checkpoint, "openvino-fp32", out=tmp_path, verify=False)
    m = load(res.artifact, allow_unverified=True)
    x = np.random.default_rng(0).random((3, 3, m.preprocess_config.size, m.preprocess_config.size), np.float32)
    t = m.runner.throughput_mode(x, 0.2)
    assert t["mode"] == "THROUGHPUT" and t["requests"] >= 1 and t["images_per_s"] > 0 and t["batch"] == 3
    # its outputs are checked against the latency model's on the same batch (an FP32 IR: the same numbers)
    assert t["argmax_agreement_vs_latency"] == 1.0 and t["max_abs_diff_vs_latency"] < 1e-3
    assert m.runner.run(x[:1])["logits"].shape[0] == 1  # the latency model still works afterwards


def test_paired_speedups_take_the_ratio_round_by_round():
    """A slow host phase in one round: the median of per-round ratios keeps the ratio, the ratio of medians loses it."""
    from edgecxr.bench.harness import add_speedups
    from edgecxr.bench.report import markdown

    def row(target, p50s, ms):
        return {"target": target, "status": "ok",
                "latency_b1": {"p50_ms": sorted(p50s)[len(p50s) // 2], "p50_ms_rounds": p50s},
                "throughput": {"ms_per_image": sorted(ms)[len(ms) // 2], "images_per_s": 1000 / sorted(ms)[len(ms) // 2],
                               "ms_per_image_rounds": ms}}

    rows = [row("torch-fp32", [54.0, 79.0, 54.0], [53.0, 56.0, 43.0]), row("a", [12.0, 17.0, 16.0], [11.0, 11.0, 14.0])]
    add_speedups(rows)
    assert rows[1]["speedup_b1"] == pytest.approx(54.0 / 16.0)
    assert rows[1]["speedup_paired"]["b1"] == pytest.approx(4.5)  # ratios 4.5, 4.65, 3.375
    assert rows[1]["speedup_paired"]["batch"] == pytest.approx(53.0 / 11.0)  # ratios 4.82, 5.09, 3.07
    assert rows[0]["speedup_paired"]["b1"] == pytest.approx(1.0)
    one = [row("torch-fp32", [54.0], [53.0]), row("a", [12.0], [11.0])]
    add_speedups(one)
    assert "speedup_paired" not in one[1]  # one round: nothing to pair
    flat = [{"machine": "m", "target": "a", "status": "ok", "speedup_b1_paired": 4.5, "speedup_batch_paired": 4.82}]
    assert "4.50 / 4.82" in markdown(flat, "t")


def test_throughput_mode_counts_only_when_its_outputs_match():
    from edgecxr.bench.harness import add_speedups

    def row(target, p50, ms, mode=None):
        r = {"target": target, "status": "ok", "latency_b1": {"p50_ms": p50},
             "throughput": {"ms_per_image": ms, "images_per_s": 1000 / ms}}
        if mode:
            r["throughput_mode"] = mode
        return r

    rows = [row("torch-fp32", 80.0, 60.0), row("a", 10.0, 10.0, {"images_per_s": 200.0, "argmax_agreement_vs_latency": 1.0}),
            row("b", 10.0, 10.0, {"images_per_s": 200.0, "argmax_agreement_vs_latency": 0.875})]
    add_speedups(rows)
    assert rows[1]["speedup_b1"] == 8.0 and rows[1]["speedup_batch"] == 6.0
    assert abs(rows[1]["speedup_throughput"] - 200 / (1000 / 60)) < 1e-9  # the mode counts
    assert rows[2]["speedup_throughput"] == 6.0 and "not counted" in rows[2]["throughput_mode_note"]


def test_report_lists_float_layers_and_rewrites_under_the_table():
    from edgecxr.bench.report import flat_rows, markdown

    base = {"status": "ok", "latency_b1": {"p50_ms": 10.0, "p90_ms": 11.0, "p99_ms": 12.0, "mean_ms": 10.0},
            "first_inference_ms": 20.0, "throughput": {"batch": 8, "ms_per_image": 9.0, "images_per_s": 111.0},
            "accuracy": 0.9, "macro_f1": 0.9, "covid_sensitivity": 1.0, "macro_auc": 0.95, "agreement": 1.0,
            "peak_rss_mb": 100.0, "info": {"precision": "int8"}}
    run = {"machine": {"cpu": {"model": "cpu", "logical_cores": 2}},
           "rows": [dict(base, target="openvino-int8", float_nodes=["/conv0/Slice", "/conv0/conv/Conv"],
                         rewrites=["gray_stem"]),
                    dict(base, target="onnx-int8", float_nodes=["/conv0/Conv"]), dict(base, target="torch-fp32")]}
    md = markdown(flat_rows(run), "t")
    assert ("- openvino-int8: kept float: /conv0/Slice, /conv0/conv/Conv; graph rewrites: gray stem (reads channel 0 "
            "only)") in md
    assert "- onnx-int8: kept float: /conv0/Conv\n" in md and "- torch-fp32" not in md
    run["rows"] = run["rows"][2:]
    assert "besides their precision" not in markdown(flat_rows(run), "t")


def test_plot_handles_unverified_and_partial_rows(tmp_path):
    """The bench plot draws verified and unverified rows, rows without a batch measurement and rows without an
    image count (older bench.json files), and writes a real PNG."""
    from edgecxr.bench.report import plot

    base = {"machine": "cpu", "batch": 8, "n_images": 109}
    rows = [dict(base, target="torch-fp32", status="ok", p50_ms=60.0, batch_ms_per_image=55.0, speedup_b1=1.0, accuracy=0.88),
            dict(base, target="onnx-int8", status="unverified", p50_ms=15.0, batch_ms_per_image=None, speedup_b1=4.0,
                 accuracy=0.87),
            dict(base, target="openvino-int8", status="ok", p50_ms=12.0, batch_ms_per_image=10.0, speedup_b1=5.0,
                 speedup_b1_paired=4.8, accuracy=0.89, n_images=None),
            dict(base, target="tensorrt-int8", status="skipped")]
    plot(rows, tmp_path / "p.png", "t")
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_bench_under_the_onednn_cap_labels_rows_and_skips_onnx(tiny_checkpoint, tmp_path):
    """`bench --onednn-isa AVX2` (what an AVX2-only CPU runs, measured on this one): torch runs capped, ONNX Runtime
    rows are skipped with the reason (MLAS ignores the cap), the report names the cap. Runs in a fresh process: the
    cap must be set before torch loads."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    from edgecxr.resources import eval_dir

    r = subprocess.run([sys.executable, "-m", "edgecxr.cli", "bench", "--model", str(tiny_checkpoint), "--data",
                        str(eval_dir()), "--targets", "torch-fp32,onnx-fp32", "--iters", "2", "--warmup", "1",
                        "--seconds", "0", "--batch", "2", "--threads", "1", "--rounds", "1", "--onednn-isa", "avx2",
                        "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    run = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = {x["target"]: x for x in run["rows"]}
    assert rows["torch-fp32"]["status"] == "ok"
    assert rows["onnx-fp32"]["status"] == "skipped" and "native kernels" in rows["onnx-fp32"]["reason"]
    cap = run["machine"]["onednn_cap"]
    assert cap["ONEDNN_MAX_CPU_ISA"] == "AVX2" and cap["ATEN_CPU_CAPABILITY"] == "avx2"
    assert not any("512" in f or "VNNI" in f for f in cap["openvino_and_torch_isa"])
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in (tmp_path / "b" / "bench.md").read_text()
    r = subprocess.run([sys.executable, "-m", "edgecxr.cli", "bench", "--model", str(tiny_checkpoint), "--onednn-isa",
                        "avx9", "--out", str(tmp_path / "c")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 4 and "unknown oneDNN ISA" in r.stderr
