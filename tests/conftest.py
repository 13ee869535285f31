import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def torch_mod():
    return pytest.importorskip("torch", reason="torch not installed (pip install 'edgecxr[train]')")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised Covid-DenseNet checkpoint at 64 px input (fast to export and run)."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    from edgecxr.checkpoint import save_checkpoint
    from edgecxr.models import covid_densenet
    from edgecxr.preprocess import PreprocessConfig

    torch.manual_seed(0)
    m = covid_densenet(num_classes=3).eval()
    meta = {"arch": "covid-densenet", "classes": ["COVID-19", "Normal", "Pneumonia"],
            "preprocess": PreprocessConfig(size=64).to_dict()}
    path = tmp_path_factory.mktemp("ck") / "tiny.safetensors"
    save_checkpoint(m.state_dict(), meta, path, half=False)
    return path


@pytest.fixture
def bench():
    """Load a script of benchmarks/ as a module: ``bench("noise_probe")`` (its folder goes on sys.path, as when run)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"

    def load(name: str):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


def _exported(checkpoint, target, folder):
    from edgecxr.export.core import export

    res = export(checkpoint, target, out=folder)
    assert res.verified, res.sidecar["verification"]
    return res.artifact


@pytest.fixture(scope="session")
def onnx_artifact(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("onnx", reason="onnx not installed")
    return _exported(tiny_checkpoint, "onnx-fp32", tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def openvino_artifact(tiny_checkpoint, tmp_path_factory):
    pytest.importorskip("openvino", reason="OpenVINO not installed")
    return _exported(tiny_checkpoint, "openvino-fp32", tmp_path_factory.mktemp("ov"))


def pytest_configure(config):
    # two cores: keep each test single-threaded so the suite stays predictable
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    # Hypothesis: the same examples on every run (CI must not pass or fail by luck); explore new ones with
    # `pytest --hypothesis-profile=explore` (a random seed each run, more examples).
    try:
        from hypothesis import settings

        settings.register_profile("repeatable", derandomize=True, max_examples=80, print_blob=True)
        settings.register_profile("explore", max_examples=1000)
        settings.load_profile("repeatable")
    except ImportError:
        pass
