import json

from typer.testing import CliRunner

from edgecxr.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("train", "eval", "export", "bench", "predict", "info"):
        assert cmd in r.output


def test_info_json():
    r = runner.invoke(app, ["info", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["versions"]["edgecxr"]
    assert isinstance(rep["cpu"]["isa"], list)
    assert isinstance(rep["gpus"], list)
    from edgecxr.hardware import isa_class

    plans = rep["int8_export"]  # what the CPU INT8 targets would build here
    assert set(plans) == {"onnx-int8", "openvino-int8"}
    vnni = any("VNNI" in f or "AMX" in f for f in isa_class(backend="openvino")["isa"])
    x86 = rep["cpu"]["arch"] in ("x86_64", "AMD64")
    assert plans["openvino-int8"]["gray_stem"] is (x86 and vnni) and plans["onnx-int8"]["gray_stem"] is False
    assert plans["openvino-int8"]["weights"] == ("7-bit" if x86 and not vnni else "8-bit")
    assert ("/conv0/conv/Conv" in plans["openvino-int8"]["float"]) is (x86 and vnni)


def test_info_model_summary():
    import pytest

    pytest.importorskip("torch", reason="torch not installed")
    r = runner.invoke(app, ["info", "--json", "--model", "covid-densenet", "--size", "224"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)["model"]
    assert 1.0 < m["flops_vs_densenet121"] <= 1.15
    assert m["params"] > 6_000_000
    r = runner.invoke(app, ["info", "--model", "nope"])
    assert r.exit_code != 0


def test_train_refuses_negative_mixup(tmp_path):
    import pytest

    pytest.importorskip("torch", reason="torch not installed")
    r = runner.invoke(app, ["train", str(tmp_path), "--mixup", "-0.1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--mixup" in r.output, r.output
    assert not (tmp_path / "run").exists()
