import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install 'edgecxr[train]')")

from edgecxr.errors import WeightsError  # noqa: E402
from edgecxr.models import (build_model, count_flops, covid_densenet, densenet121_baseline,  # noqa: E402
                            count_params)


@pytest.mark.parametrize("arch", ["covid-densenet", "densenet121"])
@pytest.mark.parametrize("batch,classes", [(1, 3), (4, 3), (4, 2), (1, 4)])
def test_output_shape(arch, batch, classes):
    m = build_model(arch, num_classes=classes).eval()
    with torch.no_grad():
        assert m(torch.randn(batch, 3, 64, 64)).shape == (batch, classes)


def test_gradients_reach_all_attention_modules():
    m = covid_densenet().train()
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    assert len(m.attention) == 3
    for att in m.attention:
        for p in att.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    assert m.scale_gate[0].weight.grad.abs().sum() > 0


def test_flops_budget():
    base = count_flops(densenet121_baseline(), 224)
    ours = count_flops(covid_densenet(), 224)
    assert 5.5e9 < base < 5.8e9  # DenseNet121: 5.67 GFLOPs at 224 (multiply-add = 2)
    assert base < ours <= 1.15 * base
    # and the shipped model must fit 16 MB as fp16
    assert count_params(covid_densenet()) * 2 < 16e6


def test_load_torchvision_backbone_state_dict(tmp_path):
    from torchvision.models import densenet121

    tv = densenet121(weights=None)
    f = tmp_path / "densenet121.pth"
    torch.save(tv.state_dict(), f)
    m = covid_densenet(weights=f)
    for k, v in tv.features.state_dict().items():
        assert torch.equal(m.backbone.state_dict()[k], v), k


def test_load_old_style_torchvision_keys(tmp_path):
    from torchvision.models import densenet121

    tv = densenet121(weights=None).state_dict()
    old = {k.replace("denselayer1.norm1.", "denselayer1.norm.1."): v for k, v in tv.items()}
    assert any("norm.1." in k for k in old)
    torch.save(old, tmp_path / "old.pth")
    m = densenet121_baseline(weights=tmp_path / "old.pth")
    assert torch.equal(m.backbone.denseblock1.denselayer1.norm1.weight, tv["features.denseblock1.denselayer1.norm1.weight"])


def test_full_checkpoint_round_trip(tmp_path):
    from edgecxr.checkpoint import save_checkpoint

    m = covid_densenet(num_classes=3).eval()
    meta = {"arch": "covid-densenet", "classes": ["a", "b", "c"], "preprocess": {}}
    save_checkpoint(m.state_dict(), meta, tmp_path / "m.safetensors", half=False)
    m2 = covid_densenet(num_classes=3, weights=tmp_path / "m.safetensors").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), m2(x), atol=1e-6)
    with pytest.raises(WeightsError, match="covid-densenet"):
        densenet121_baseline(weights=tmp_path / "m.safetensors")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10])
def test_corrupt_weights_file(tmp_path, content):
    for suffix in (".pth", ".safetensors"):
        f = tmp_path / f"bad{suffix}"
        f.write_bytes(content)
        with pytest.raises(WeightsError, match="bad"):
            covid_densenet(weights=f)


def test_truncated_safetensors(tmp_path):
    from edgecxr.checkpoint import save_checkpoint

    save_checkpoint(densenet121_baseline().state_dict(), {"arch": "densenet121", "classes": ["a", "b", "c"]},
                    tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt|truncated|valid"):
        densenet121_baseline(weights=tmp_path / "m.safetensors")


def test_wrong_state_dict(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="features"):
        covid_densenet(weights=tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match="no such file"):
        covid_densenet(weights=tmp_path / "missing.pth")


def test_imagenet_offline_error_names_local_file(monkeypatch):
    from urllib.error import URLError

    from torchvision.models import DenseNet121_Weights

    def offline(self, *a, **k):
        raise URLError("no network")

    monkeypatch.setattr(type(DenseNet121_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(WeightsError, match="weights=PATH"):
        covid_densenet(weights="imagenet")


def test_unknown_arch():
    with pytest.raises(WeightsError, match="covid-densenet"):
        build_model("resnet50")


@pytest.mark.parametrize("arch", ["covid-densenet", "densenet121"])
def test_onnx_export_parity(tmp_path, arch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edgecxr.export.onnx_fp32 import export_onnx, get_metadata

    m = build_model(arch).eval()
    path = export_onnx(m, tmp_path / "m.onnx", size=64, metadata={"classes": ["a", "b", "c"]})
    import onnx

    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    assert get_metadata(path)["classes"] == ["a", "b", "c"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        x = torch.randn(batch, 3, 64, 64)
        out = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = m(x).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Conv", "Relu", "BatchNormalization", "Concat", "AveragePool", "MaxPool", "GlobalAveragePool",
                   "ReduceMean", "ReduceMax", "Sigmoid", "Mul", "Add", "Resize", "Flatten", "Gemm", "Softmax",
                   "Reshape", "Unsqueeze", "Shape", "Gather", "Slice", "Cast", "MatMul", "Constant",
                   "GlobalMaxPool", "Squeeze", "Div", "Sub"}, ops
