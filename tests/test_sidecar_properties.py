"""Property-based test (Hypothesis): a hand-edited or corrupted sidecar never crashes the runtime.

One field of an exported artifact's sidecar (any depth; or one of its optional blocks such as ``guard``,
``operating_point`` and ``heatmap``) is replaced by an arbitrary JSON value or deleted. Then either ``load`` refuses
the artifact with an ArtifactError, or the loaded runtime classifies an image with status ok / rejected / error
and finite probabilities. Any other exception is a failure, shrunk by Hypothesis to the smallest edit.
"""

import json
import math
import shutil

import pytest

pytest.importorskip("hypothesis", reason="hypothesis not installed (it is in the dev extra)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgecxr.errors import ArtifactError  # noqa: E402
from edgecxr.sidecar import sidecar_path  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4)


def _paths(x, path=()):
    """Every key path of a JSON document (the first three items of a list)."""
    if path:
        yield path
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x[:3]):
            yield from _paths(v, path + (i,))


@pytest.fixture(scope="module")
def artifact_copy(onnx_artifact, tmp_path_factory):
    d = tmp_path_factory.mktemp("sidecar-props")
    for f in onnx_artifact.parent.iterdir():
        shutil.copy(f, d / f.name)
    return d / onnx_artifact.name


def test_edited_sidecars_are_refused_or_run_cleanly(artifact_copy, tmp_path_factory):
    from PIL import Image

    from edgecxr.runtime import load

    original = json.loads(sidecar_path(artifact_copy).read_text())
    for key in ("guard", "operating_point", "heatmap"):  # optional blocks: let the edits reach them too
        original.setdefault(key, None)
    paths = [p for p in _paths(original) if p[:2] != ("verification", "reference")]
    image = tmp_path_factory.mktemp("img") / "x.png"
    Image.effect_noise((96, 96), 60).save(image)

    @settings(max_examples=50, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(path=st.sampled_from(paths), value=JSON_VALUES, delete=st.booleans())
    def edit(path, value, delete):
        doc = json.loads(json.dumps(original))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        sidecar_path(artifact_copy).write_text(json.dumps(doc))
        try:
            m = load(artifact_copy, allow_unverified=True)
        except ArtifactError:
            return
        with m:
            r = m.predict([image])[0]
        assert r.status in ("ok", "rejected", "error")
        if r.status == "ok":
            assert all(math.isfinite(v) for v in r.probabilities.values())

    try:
        edit()
    finally:
        sidecar_path(artifact_copy).write_text(json.dumps(original))
