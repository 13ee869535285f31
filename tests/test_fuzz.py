"""A short fuzz run of the decoding contract (the long run: python -m edgecxr.fuzz --n 100000)."""

import time

import pytest

pytest.importorskip("pydicom")


def test_fuzz_short_run():
    from edgecxr.fuzz import run

    t0 = time.perf_counter()
    rep = run(1500, seed=int(time.strftime("%j")), chunk=250, workers=2)  # the seed changes daily
    assert time.perf_counter() - t0 < 60
    assert rep["process_deaths"] == [], rep["process_deaths"]
    assert rep["findings"] == [], rep["findings"][:5]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_fuzz_seeds_decode(k):
    """The unmutated seeds themselves are readable (so mutations start from valid files)."""
    from edgecxr.fuzz import image_seeds

    name, data = image_seeds()[k]
    assert len(data) > 100
