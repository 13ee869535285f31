"""Issue 12: every input gets ImageError or a finite result; native decoder crashes are isolated;
tampered artifacts are refused; the audit log survives threads and crashes."""

import json
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from edgecxr.errors import ArtifactError, ImageError
from edgecxr.imaging import load_gray
from edgecxr.resources import eval_dir
from edgecxr.sidecar import sidecar_path

pydicom = pytest.importorskip("pydicom")
EVAL = sorted(eval_dir().rglob("*.png"))


def test_wide_float_range_is_finite():
    a = np.linspace(-3e38, 3e38, 64 * 64, dtype=np.float32).reshape(64, 64)
    g = load_gray(a)
    assert np.isfinite(g).all() and g.min() == 0.0 and g.max() == 1.0


@pytest.mark.parametrize("arr", [np.zeros((64, 64), np.uint8), np.full((64, 64), 7, np.uint16),
                                 np.zeros((64, 64, 4), np.uint8)])
def test_blank_inputs_refused(arr):
    with pytest.raises(ImageError, match="blank"):
        load_gray(arr)
    with pytest.raises(ImageError, match="blank"):
        load_gray(Image.fromarray(arr))


def _dx(path, **over):
    from edgecxr.synthetic_dicom import grey_dataset

    arr = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)
    ds = grey_dataset(arr, bits_stored=12, **over)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("over,match", [
    ({"BitsStored": 1}, "inconsistent pixel module"),
    ({"BitsAllocated": 64}, "inconsistent pixel module"),
    ({"Rows": 8000, "Columns": 8000}, "exceeds"),
    ({"Rows": 128}, "truncated"),
    ({"WindowCenter": [100, 200], "WindowWidth": 50, "BitsStored": [12, 12]}, "several values"),
])
def test_dicom_header_validated_before_decoding(tmp_path, over, match):
    with pytest.raises(ImageError, match=match):
        load_gray(_dx(tmp_path / "x.dcm", **over))


def test_window_outside_stored_values_falls_back(tmp_path):
    info: dict = {}
    g = load_gray(_dx(tmp_path / "w.dcm", WindowCenter=60000, WindowWidth=10), info)
    assert g.max() - g.min() > 0.9 and "voi_fallback" in info


def test_any_decoder_exception_becomes_image_error(tmp_path):
    p = _dx(tmp_path / "m.dcm")
    ds = pydicom.dcmread(p)
    ds.ModalityLUTSequence = [pydicom.Dataset()]  # an empty LUT item (seen in a public test suite)
    ds.save_as(p)
    try:
        g = load_gray(p)
        assert np.isfinite(g).all()
    except ImageError:
        pass


def _abort(path):  # a decoder that kills its process, as python-gdcm did on some files
    os.abort()


def test_native_crash_is_isolated(tmp_path):
    from edgecxr.runtime.isolation import IsolatedDecoder

    dec = IsolatedDecoder(decode=_abort)
    p = _dx(tmp_path / "c.dcm")
    with pytest.raises(ImageError, match="crashed"):
        dec.load_gray(p)
    ok = IsolatedDecoder()
    assert ok.load_gray(p).shape == (64, 64)  # a fresh worker decodes the next file
    ok.close()
    dec.close()


def _hang(path):  # a decoder stuck in a loop
    import time

    time.sleep(60)


def test_hung_decoder_is_killed(tmp_path):
    from edgecxr.runtime.isolation import IsolatedDecoder

    dec = IsolatedDecoder(timeout=3, decode=_hang)
    with pytest.raises(ImageError, match="took longer"):
        dec.load_gray(_dx(tmp_path / "h.dcm"))
    assert dec._state["pool"] is None  # the worker was killed; the next input starts a fresh one
    dec.close()


def test_isolate_all_formats(tmp_path):
    """formats="all" sends PNG through the worker too (a crash there costs one file); the default keeps it in-process."""
    from edgecxr.runtime.isolation import IsolatedDecoder

    p = tmp_path / "a.png"
    Image.fromarray((np.add.outer(np.arange(64), np.arange(64)) % 256).astype(np.uint8)).save(p)
    crash_all, crash_dicom = IsolatedDecoder(decode=_abort, formats="all"), IsolatedDecoder(decode=_abort)
    with pytest.raises(ImageError, match="crashed"):
        crash_all.load_gray(p)
    assert crash_dicom.load_gray(p).shape == (64, 64)  # not routed: the crashing decoder never ran
    ok, notes = IsolatedDecoder(formats="all"), {}
    assert np.array_equal(ok.load_gray(p, notes), load_gray(p))
    with pytest.raises(ImageError, match="no such file"):
        ok.load_gray(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="formats"):
        IsolatedDecoder(formats="png")
    from edgecxr.runtime import load

    with pytest.raises(ValueError, match="isolate_decoding"):
        load(tmp_path / "any.onnx", isolate_decoding="al")  # a typo is refused, not read as "DICOM only"
    for d in (crash_all, crash_dicom, ok):
        d.close()


def test_large_images_come_back_through_shared_memory(tmp_path):
    """Images over 1 MiB return through the worker's shared-memory block: the same pixels as in-process, the block
    replaced when outgrown and freed on close."""
    from edgecxr.runtime.isolation import IsolatedDecoder

    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(700, 600), (1400, 1100), (900, 800)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((rng.random((h, w)) * 200 + 20).astype(np.uint8)).save(paths[-1])
    dec = IsolatedDecoder(formats="all")
    names = []
    for p in paths:
        assert np.array_equal(dec.load_gray(p), load_gray(p))
        names.append(dec._state["block"].name)
    assert names[0] != names[1] == names[2]  # outgrown once, then reused
    dec.close()
    if os.path.isdir("/dev/shm"):
        assert not any(os.path.exists(f"/dev/shm/{n}") for n in names)


def test_full_shared_memory_falls_back_to_the_pipe(tmp_path, monkeypatch):
    """No room in /dev/shm (containers give it 64 MB): the image goes back through the pipe, never a SIGBUS."""
    from edgecxr.runtime import isolation

    assert isolation._shm_has_room(1 << 20, str(tmp_path)) and not isolation._shm_has_room(1 << 60, str(tmp_path))
    g = np.ones((1024, 1024), np.float32)
    monkeypatch.setattr(isolation, "_shm_has_room", lambda n: False)
    monkeypatch.setattr(isolation, "_BLOCK", None)
    out, _ = isolation._decode_shared(lambda p: (g, {}), "x")
    assert isinstance(out, np.ndarray) and isolation._BLOCK is None


def _capped_child(q):
    from edgecxr.runtime.isolation import limit_memory

    limit_memory(256 << 20)
    try:
        import re

        re.compile("(" * 60 + "x" + ")" * 60)  # new stack pages and heap, as Pillow's EXIF parsing needs
        ok = len(np.zeros(1 << 16)) == 1 << 16
        try:
            np.ones(1 << 30)  # 8 GiB: over the 256 MiB allowance
            bomb = "not refused"
        except MemoryError:
            bomb = "MemoryError"
        q.put((ok, bomb))
    except BaseException as exc:  # noqa: BLE001
        q.put((False, repr(exc)))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc and fork")
def test_memory_cap_counts_from_a_large_parent():
    """A decoding worker forked from a process that already maps more than the cap (torch, engines) must
    still run ordinary code and turn a bomb into MemoryError (capped absolutely, it segfaulted in Pillow)."""
    import multiprocessing as mp

    reserved = np.empty(6 << 30, np.uint8)  # 6 GiB of address space, never touched: no real memory
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_capped_child, args=(q,), daemon=True)
    proc.start()
    del reserved
    proc.join(60)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        q.cancel_join_thread()
        pytest.fail("the capped child hung (could not allocate what ordinary code needs)")
    assert proc.exitcode == 0, f"the capped child died (exit code {proc.exitcode})"
    assert q.get(timeout=5) == (True, "MemoryError")


def test_non_finite_outputs_are_errors(onnx_artifact):
    from edgecxr.runtime import load

    with load(onnx_artifact) as m:
        run = m.runner.run
        m.runner.run = lambda x: {"logits": run(x)["logits"] * np.nan}
        r = m.predict(EVAL[:2])
    assert [x.status for x in r] == ["error", "error"] and all(not x.probabilities for x in r)


def _copy(artifact, dst):
    for f in artifact.parent.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    return dst / artifact.name


def test_sidecar_only_edit_of_verdict_refused(tiny_checkpoint, tmp_path):
    from edgecxr.export.core import export
    from edgecxr.runtime import load

    res = export(tiny_checkpoint, "onnx-fp32", out=tmp_path / "a", verify=False)
    side = json.loads(sidecar_path(res.artifact).read_text())
    side["verification"]["verdict"] = "passed"
    sidecar_path(res.artifact).write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="verification"):
        load(res.artifact)


@pytest.mark.parametrize("bad,match", [({"engine": {"backend": "onnx", "precision": "fp32", "max_batch": "abc"}}, "max_batch"),
                                       ({"extra_files": [{"file": "../../x", "bytes": 1, "sha256": "0" * 64}]}, "plain file name"),
                                       ({"format": 1}, "format")])
def test_bad_sidecar_values_name_the_field(onnx_artifact, tmp_path, bad, match):
    from edgecxr.runtime import load

    art = _copy(onnx_artifact, tmp_path)
    side = json.loads(sidecar_path(art).read_text())
    side.update(bad)
    sidecar_path(art).write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match=match):
        load(art)


def test_signed_artifacts(onnx_artifact, tmp_path):
    pytest.importorskip("cryptography")
    from edgecxr.runtime import load
    from edgecxr.signing import generate_keypair, sign_artifact

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    art = _copy(onnx_artifact, tmp_path)
    with pytest.raises(ArtifactError, match="not signed"):
        load(art, trusted_keys=[tmp_path / "k.pub"])
    sign_artifact(art, tmp_path / "k.pem")
    load(art, trusted_keys=[tmp_path / "k.pub"]).close()
    with pytest.raises(ArtifactError, match="trusted key"):
        load(art, trusted_keys=[tmp_path / "other.pub"])
    # swap two class names in the sidecar (and re-sign nothing): the signature no longer matches
    side = json.loads(sidecar_path(art).read_text())
    side["classes"][0], side["classes"][1] = side["classes"][1], side["classes"][0]
    sidecar_path(art).write_text(json.dumps(side))
    with pytest.raises(ArtifactError):
        load(art, trusted_keys=[tmp_path / "k.pub"])


def test_load_close_100_times_does_not_grow(onnx_artifact):
    from edgecxr.runtime import load

    def rss_kb():
        return int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS")).split()[1])

    for _ in range(10):
        with load(onnx_artifact) as m:
            m.predict(EVAL[:1])
    before = rss_kb()
    for _ in range(100):
        with load(onnx_artifact) as m:
            m.predict(EVAL[:1])
    assert m.runner.closed
    assert rss_kb() - before < 60_000, "memory grew by more than 60 MB over 100 load/close cycles"


def test_audit_log_threads_and_crash(onnx_artifact, tmp_path):
    from edgecxr.runtime import load
    from edgecxr.runtime.audit import read_audit

    log = tmp_path / "audit.jsonl"
    with load(onnx_artifact, audit=log) as m:
        ts = [threading.Thread(target=m.predict, args=(EVAL[:5],)) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
    lines = log.read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["status"] == "ok" for x in lines)  # no interleaving
    rec = json.loads(lines[0])
    assert len(rec["input_sha256"]) == 64 and rec["artifact_sha256"] and rec["latency_ms"] >= 0
    assert EVAL[0].name not in log.read_text()  # no file names or paths
    with open(log, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"time": "2026-')
    assert len(read_audit(log)) == 20
    with load(onnx_artifact, audit=log) as m:
        m.predict(EVAL[:1])
    assert len(read_audit(log)) == 21  # the next line is whole
