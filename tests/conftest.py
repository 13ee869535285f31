import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def torch_mod():
    return pytest.importorskip("torch", reason="torch not installed (pip install 'edgecxr[train]')")
