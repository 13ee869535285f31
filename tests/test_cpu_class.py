"""An INT8 verdict holds for the CPU class it was reached on: the runtime refuses it elsewhere until
`edgecxr verify` has re-run the gate there (edgecxr/runtime/isa.py)."""
import json

import pytest

from edgecxr.errors import ArtifactError
from edgecxr.hardware import isa_class

VNNI = {"arch": "x86_64", "isa": ["AVX-512 VNNI", "AVX-512F", "AVX2"]}
AVX2 = {"arch": "x86_64", "isa": ["AVX2"]}


def test_isa_class_believes_cpuid_over_proc_cpuinfo():
    cpu = {"arch": "x86_64", "isa": ["AVX2", "FMA", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16", "AMX", "AMX-INT8"]}
    full = {"AVX": True, "AVX2": True, "AVX512F": True, "AVX512VNNI": True, "AVX512BF16": True}
    assert isa_class(cpu, full)["isa"] == ["AMX", "AMX-INT8", "AVX-512 BF16", "AVX-512 VNNI", "AVX-512F", "AVX2"]
    # an emulator (qemu -cpu Haswell) answers CPUID without AVX-512 while /proc/cpuinfo is the host's
    assert isa_class(cpu, {"AVX": True, "AVX2": True, "AVX512F": False})["isa"] == ["AVX2"]
    assert isa_class(cpu, {"AVX": True, "AVX2": True, "AVX512F": True, "AVX512VNNI": False, "AVX512BF16": True})[
        "isa"] == ["AMX", "AMX-INT8", "AVX-512 BF16", "AVX-512F", "AVX2"]
    assert isa_class(cpu, {})["isa"] == isa_class(cpu, full)["isa"]  # no probe: /proc/cpuinfo as it is


@pytest.fixture(scope="module")
def int8_artifact(tiny_checkpoint, tmp_path_factory):
    """The tiny random model as ONNX INT8, gated with a tolerance it meets (the gate's mechanics, not its numbers)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    from edgecxr.export.core import export
    from edgecxr.export.targets import load_target

    t = load_target("onnx-int8")
    t.tolerance.min_agreement, t.tolerance.max_accuracy_drop = 0.0, 1.0
    t.tolerance.min_guard_agreement, t.tolerance.max_op_sensitivity_drop = 0.0, 1.0
    t.tolerance.min_finding_agreement = 0.0
    res = export(tiny_checkpoint, t, out=tmp_path_factory.mktemp("int8"))
    assert res.verified, res.sidecar.verification.reasons
    return res.artifact


def _as_cpu(monkeypatch, isa):
    monkeypatch.setattr("edgecxr.hardware.isa_class", lambda *a, **k: dict(isa))


def test_gate_records_its_cpu_and_reference(int8_artifact):
    from edgecxr.sidecar import read_sidecar

    v = read_sidecar(int8_artifact).verification
    assert v["isa"] == isa_class()
    ref = v["reference"]
    assert len(ref["sha256"]) == len(ref["labels"]) == len(ref["logits"]) == v["images"] > 0
    assert len(set(ref["sha256"])) == len(ref["sha256"])


def test_int8_refused_on_another_cpu_until_verified_there(int8_artifact, onnx_artifact, monkeypatch):
    from edgecxr.runtime import load
    from edgecxr.runtime.isa import read_records, record_path, verify_here

    record_path(int8_artifact).unlink(missing_ok=True)
    here = isa_class()
    other = AVX2 if here != AVX2 else VNNI
    _as_cpu(monkeypatch, other)
    with pytest.raises(ArtifactError, match="edgecxr verify"):
        load(int8_artifact)
    load(onnx_artifact).close()  # FP32 kernels are not ISA-dependent: no check
    load(int8_artifact, allow_unverified=True).close()  # the explicit escape hatch still works

    rec = verify_here(int8_artifact)
    assert rec["verdict"] == "passed" and rec["isa"] == other and rec["images"] > 0
    assert rec["agreement"] == 1.0  # same kernels really ran: the reference is reproduced exactly here
    load(int8_artifact).close()

    # the record is bound to this artifact and sidecar: edited, it no longer counts
    data = json.loads(record_path(int8_artifact).read_text())
    data["records"][0]["artifact_sha256"] = "0" * 64
    record_path(int8_artifact).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="edgecxr verify"):
        load(int8_artifact)

    # a failed re-verification says so, and why
    data["records"][0].update(artifact_sha256=rec["artifact_sha256"], verdict="failed", reasons=["agreement 0.9 < 0.99"])
    record_path(int8_artifact).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="failed its gate on this CPU.*agreement 0.9"):
        load(int8_artifact)
    assert len(read_records(int8_artifact)) == 1
    record_path(int8_artifact).unlink()


def test_verify_cli_reports_and_needs_the_gate_images(int8_artifact, tmp_path):
    from typer.testing import CliRunner

    from edgecxr.cli import app

    r = CliRunner().invoke(app, ["verify", str(int8_artifact)])
    assert r.exit_code == 0, r.output
    assert "passed" in r.output and "agreement 1.0000" in r.output
    r = CliRunner().invoke(app, ["verify", str(int8_artifact), "--images", str(tmp_path)])
    assert r.exit_code == 2 and "gate images are not under" in r.output


def test_onednn_cap_lowers_the_class_for_openvino_only():
    """ONEDNN_MAX_CPU_ISA=AVX2 makes OpenVINO (and torch) run AVX2 kernels: their INT8 verdicts and reduce_range belong
    to the AVX2 class then; ONNX Runtime's MLAS reads CPUID and ignores the cap."""
    from edgecxr.hardware import onednn_cap

    cpu = {"arch": "x86_64", "isa": ["AVX2", "FMA", "AVX-512F", "AVX-512 VNNI", "AVX-512 BF16"]}
    full = {"AVX": True, "AVX2": True, "AVX512F": True, "AVX512VNNI": True, "AVX512BF16": True}
    cap = {"ONEDNN_MAX_CPU_ISA": "avx2"}
    assert isa_class(cpu, full, "openvino", cap)["isa"] == ["AVX2"]
    assert isa_class(cpu, full, "torch", {"DNNL_MAX_CPU_ISA": "AVX2"})["isa"] == ["AVX2"]
    assert isa_class(cpu, full, "onnx", cap)["isa"] == ["AVX-512 BF16", "AVX-512 VNNI", "AVX-512F", "AVX2"]
    assert isa_class(cpu, full, "openvino", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})["isa"] == [
        "AVX-512 VNNI", "AVX-512F", "AVX2"]
    assert isa_class(cpu, full, "openvino", {"ONEDNN_MAX_CPU_ISA": "ALL"}) == isa_class(cpu, full, "openvino", {})
    assert onednn_cap({}) is None and onednn_cap({"ONEDNN_MAX_CPU_ISA": "AVX"}) == set()


def test_onednn_cap_in_this_process_decides_reduce_range_and_the_runtime_check(int8_artifact, monkeypatch):
    import dataclasses

    from edgecxr.export.onnx_build import resolve_reduce_range
    from edgecxr.hardware import cpu_info
    from edgecxr.runtime import load
    from edgecxr.runtime.isa import check_cpu, record_path
    from edgecxr.sidecar import read_sidecar

    if cpu_info()["arch"] not in ("x86_64", "AMD64"):
        pytest.skip("the oneDNN ISA cap is an x86 matter; this machine is " + cpu_info()["arch"])
    record_path(int8_artifact).unlink(missing_ok=True)
    native = isa_class()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_reduce_range("auto", "openvino") is True  # no VNNI kernels under the cap: 7-bit weights
    assert "VNNI" not in " ".join(isa_class(backend="openvino")["isa"])
    assert isa_class(backend="onnx") == native  # ONNX Runtime unaffected
    load(int8_artifact).close()  # an ONNX INT8 artifact gated here still loads under the cap
    side = read_sidecar(int8_artifact)
    as_openvino = dataclasses.replace(side, engine=dict(side.engine, backend="openvino"))
    if isa_class(backend="openvino") != native:  # a VNNI / AVX-512 machine: the same verdict read as OpenVINO's
        with pytest.raises(ArtifactError, match="edgecxr verify"):
            check_cpu(int8_artifact, as_openvino)
    else:  # an AVX2-only machine: the cap changes nothing
        check_cpu(int8_artifact, as_openvino)
