"""The ``edgecxr`` command line (typer + rich). Heavy layers are imported inside the commands.

Exit codes (documented in README): 0 success; 1 an input could not be read (predict) or a general
error; 2 an artifact or engine problem (missing, tampered, unverified, engine not installed);
3 at least one input was rejected by the input guard (predict); 4 bad usage or configuration
(unknown target, bad TOML key); 5 export verification failed. Every expected failure is one line on
stderr; file names and messages are printed literally (no rich markup is interpreted in them).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgecxr.errors import EdgeCXRError
from edgecxr.sidecar import REWRITES

app = typer.Typer(help="Chest X-ray COVID-19 classifier: train, export to ONNX/OpenVINO/TensorRT, benchmark, run.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
if not console.is_terminal:  # logs and pipes: wide tables rather than one character per column
    console = Console(width=220)
err = Console(stderr=True)


EXIT_INPUT, EXIT_ARTIFACT, EXIT_REJECTED, EXIT_USAGE, EXIT_UNVERIFIED = 1, 2, 3, 4, 5


def _fail(msg: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {escape(str(msg))}")
    raise typer.Exit(code)


def _code_for(exc: Exception) -> int:
    from edgecxr.errors import ArtifactError, BackendUnavailable

    if isinstance(exc, (ArtifactError, BackendUnavailable)):
        return EXIT_ARTIFACT
    from edgecxr.export.targets import TargetError

    return EXIT_USAGE if isinstance(exc, TargetError) else 1


# ---------------------------------------------------------------- info
def _int8_plans() -> dict:
    """What `edgecxr export` would build for each CPU INT8 target on this machine: the "auto" settings resolved by
    the engine's ISA class (7-bit weights without VNNI, the gray stem with VNNI/AMX) and the layers it starts float."""
    from edgecxr.export.onnx_build import resolve_reduce_range
    from edgecxr.export.targets import list_targets, load_target, resolve_target

    plans = {}
    for name in list_targets():
        try:
            tgt = load_target(name)
        except EdgeCXRError:
            continue
        if tgt.precision != "int8" or tgt.backend not in ("onnx", "openvino"):
            continue
        res = resolve_target(tgt)
        plans[name] = {"weights": "7-bit" if resolve_reduce_range(tgt.int8.reduce_range, tgt.backend) else "8-bit",
                       "gray_stem": res.gray_stem, "float": list(res.int8.exclude)}
    return plans


@app.command()
def info(
    model: Optional[str] = typer.Option(None, "--model", help="Also summarise a model: covid-densenet or densenet121."),
    size: int = typer.Option(224, help="Input size for the model's FLOPs."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Versions, CPU ISA features, GPUs, Jetson; with --model, parameters and FLOPs."""
    from edgecxr.hardware import machine_report
    from edgecxr.imaging import dicom_support

    rep = machine_report()
    rep["dicom_decoders"] = dicom_support()
    rep["int8_export"] = _int8_plans()
    if model:
        try:
            from edgecxr.models import summary
        except ImportError:
            _fail("model summaries need torch: pip install 'edgecxr[train]'", EXIT_USAGE)
        try:
            rep["model"] = summary(model, size)
        except EdgeCXRError as exc:
            _fail(str(exc), EXIT_USAGE)
    if as_json:
        print(json.dumps(rep, indent=2))
        return
    t = Table(title="edgecxr info", show_header=False)
    for k, v in rep["versions"].items():
        t.add_row(k, v or "[dim]not installed[/]")
    cpu = rep["cpu"]
    t.add_row("CPU", f"{cpu['model']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)")
    t.add_row("ISA", ", ".join(cpu["isa"]) or "none of interest")
    from edgecxr.hardware import isa_class, onednn_cap

    if onednn_cap() is not None:  # OpenVINO (and torch) kernels follow it; INT8 verdicts then belong to that class
        capped = isa_class(backend="openvino")["isa"]
        t.add_row("oneDNN cap", escape(f"ONEDNN_MAX_CPU_ISA: OpenVINO and torch run as {', '.join(capped) or 'no AVX2'}"
                                       " (ONNX Runtime ignores it)"))
    t.add_row("GPUs", "; ".join(f"{g['name']} {g['memory_mib']} MiB cc {g['compute_capability']} driver {g['driver']}"
                                for g in rep["gpus"]) or "none (no nvidia-smi)")
    t.add_row("Jetson", json.dumps(rep["jetson"]) if rep["jetson"] else "no")
    t.add_row("INT8 export here", escape("; ".join(
        f"{n}: {p['weights']} weights" + (", gray stem" if p["gray_stem"] else "") + f", float: {', '.join(p['float']) or 'none'}"
        for n, p in rep["int8_export"].items())) or "no CPU INT8 target")
    t.add_row("DICOM decoders", ", ".join(k for k, ok in rep["dicom_decoders"].items() if ok))
    t.add_row("backends", escape("; ".join(f"{n}: {'available' if b['available'] else b['reason']}"
                                           for n, b in rep["backends"].items())))
    if "model" in rep:
        m = rep["model"]
        t.add_row("model", f"{m['name']}: {m['params'] / 1e6:.2f} M params, {m['gflops']:.2f} GFLOPs at {size}x{size} "
                           f"({m['flops_vs_densenet121']:.3f}x DenseNet121)")
    console.print(t)


# ---------------------------------------------------------------- data
@app.command()
def split(
    data: Path = typer.Argument(..., help="Dataset: class folders, COVIDx split file or CSV manifest."),
    out: Path = typer.Option(..., "--out", help="CSV manifest to write (file, class, split, patient_id)."),
    layout: str = typer.Option("auto", help="folder | covidx | csv | auto"),
    val: float = typer.Option(0.15), test: float = typer.Option(0.15), seed: int = typer.Option(0),
) -> None:
    """Make patient-level train/val/test splits (no patient in two splits)."""
    from collections import Counter

    from edgecxr.data import load_samples, patient_split, write_manifest

    try:
        samples = patient_split(load_samples(data, layout), (1 - val - test, val, test), seed)
    except (EdgeCXRError, ValueError) as exc:
        _fail(str(exc))
    write_manifest(samples, out)
    c = Counter((s.split, s.label) for s in samples)
    t = Table(title=f"patient-level split -> {out}")
    labels = sorted({s.label for s in samples})
    t.add_column("split")
    for lab in labels:
        t.add_column(lab, justify="right")
    for sp in ("train", "val", "test"):
        t.add_row(sp, *[str(c[(sp, lab)]) for lab in labels])
    console.print(t)


def _split_samples(data: Path, layout: str, permissive_only: bool):
    from edgecxr.data.splits import split_parts

    return split_parts(data, layout, permissive_only)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Dataset with splits (class folders under train/val/test, COVIDx or CSV)."),
    out: Path = typer.Option(Path("runs/train"), "--out", help="Run folder (checkpoints, metrics)."),
    arch: str = typer.Option("covid-densenet", help="covid-densenet | densenet121"),
    layout: str = typer.Option("auto"),
    epochs: int = typer.Option(12), batch_size: int = typer.Option(16, "--batch"), lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-4), warmup: float = typer.Option(1.0, help="Warm-up epochs."),
    balanced: bool = typer.Option(False, help="Class-balanced sampling."),
    class_weighted_loss: bool = typer.Option(False, "--class-weighted-loss", help="Weight the loss by each class's "
                                             "inverse frequency instead of (or with) balanced sampling."),
    seed: int = typer.Option(0), size: int = typer.Option(224), resize: str = typer.Option("crop"),
    equalize: bool = typer.Option(False, help="Histogram-equalise every image in preprocessing (carried into "
                                  "checkpoints and artifacts)."),
    smooth: float = typer.Option(0.0, min=0.0, max=4.0, help="Gaussian low-pass (sigma, pixels of the resized "
                                 "input) in preprocessing, 0 = off: evens out pixel noise that differs between sources' "
                                 "resizing paths (carried into checkpoints and artifacts)."),
    workers: int = typer.Option(0), weights: Optional[str] = typer.Option(None, help="imagenet | PATH"),
    permissive_only: bool = typer.Option(False, help="Train only on images whose licence allows commercial use "
                                         "(validation still uses every val image: evaluating is not redistributing)."),
    val_permissive_only: bool = typer.Option(False, help="Also drop non-commercial images from validation."),
    exclude_source: list[str] = typer.Option([], "--exclude-source", help="Leave this source's images (manifest "
                                             "column 'source', e.g. sbu) out of training; val keeps and reports them, "
                                             "but the best checkpoint is chosen without them. Repeatable."),
    fraction: float = typer.Option(1.0, help="Train on this share of the training patients (per class and source; "
                                   "for training-set-size sweeps)."),
    augment: str = typer.Option("light", help="Augmentation: light | strong | robust (strong + border and patch erasing, zoom to 1.4) | grain (strong + "
                                 "noise and blur at the input resolution, against pixel noise as a shortcut) | none."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the cross-entropy loss."),
    mixup: float = typer.Option(0.0, min=0.0, help="MixUp alpha (e.g. 0.2): train on blends of image pairs with blended "
                                "labels; 0 turns it off."),
    ema: float = typer.Option(0.0, help="EMA decay of the weights (e.g. 0.99); 0 turns it off."),
    select: str = typer.Option("macro_f1", help="Best-checkpoint rule on val: macro_f1 | worst_source."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="CPU bf16 autocast (default: when the CPU has AVX-512 BF16/AMX)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after N optimiser steps (smoke tests)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    fresh: bool = typer.Option(False, help="Ignore last.pt in --out instead of resuming."),
) -> None:
    """Train Covid-DenseNet or the DenseNet121 baseline; resumes from OUT/last.pt."""
    import torch

    from edgecxr.train.loop import TrainConfig
    from edgecxr.train.loop import train as run_train

    if threads:
        torch.set_num_threads(threads)
    try:
        samples, parts = _split_samples(data, layout, False)
        if permissive_only:
            parts["train"] = [s for s in parts["train"] if not s.licence_nc]
        if exclude_source:
            known, drop = {s.source for s in samples}, set(exclude_source)
            unknown = sorted(drop - known)
            if unknown:
                _fail(f"--exclude-source: no source {', '.join(unknown)}; this data has "
                      f"{', '.join(sorted(str(k) for k in known))} (manifest column 'source').")
            parts["train"] = [s for s in parts["train"] if s.source not in drop]
            empty = sorted({s.label for s in samples} - {s.label for s in parts["train"]})
            if empty:
                _fail(f"--exclude-source {' '.join(exclude_source)} leaves no training image of {', '.join(empty)}; "
                      "leave out fewer sources.")
        if fraction != 1.0:
            from edgecxr.data.splits import subsample

            try:
                parts["train"] = subsample(parts["train"], fraction, seed)
            except ValueError as exc:
                _fail(f"--fraction: {exc}")
        if val_permissive_only:
            parts["val"] = [s for s in parts["val"] if not s.licence_nc]
        classes = sorted({s.label for s in samples})
        cfg = TrainConfig(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                          warmup_epochs=warmup, balanced=balanced, class_weighted_loss=class_weighted_loss, seed=seed, size=size, resize=resize, equalize=equalize, smooth=smooth, workers=workers,
                          weights=weights, max_steps=max_steps, classes=classes, augment=augment,
                          label_smoothing=label_smoothing, mixup=mixup, ema=ema, select=select, bf16=bf16,
                          select_without=sorted(exclude_source))
        if exclude_source and all(s.source in exclude_source for s in parts["val"]):
            _fail(f"--exclude-source {' '.join(exclude_source)} leaves no val image to choose the best checkpoint on; "
                  "leave out fewer sources.")
        info = {"source": str(data), "layout": layout, "permissive_only": permissive_only,
                "configuration": "shipped (permissive training images)" if permissive_only
                else "research (includes non-commercial images: never ship these weights)",
                "non_commercial_training_images": sum(s.licence_nc for s in parts["train"]),
                "n_train": len(parts["train"]), "n_val": len(parts["val"]), "train_fraction": fraction,
                "excluded_training_sources": sorted(exclude_source)}
        summary = run_train(cfg, parts["train"], parts["val"], out, resume=not fresh, data_info=info)
    except EdgeCXRError as exc:
        _fail(str(exc))
    console.print(f"best val score ({select}) {summary['best_val_score']:.4f}; checkpoint {out / 'best.safetensors'}")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="A .safetensors checkpoint, or an exported artifact (model.onnx, model.xml, ..., or its export folder)."),
    data: Path = typer.Argument(..., help="Dataset (any layout)."),
    split_name: str = typer.Option("test", "--split", help="Which split to evaluate ('all' for every image)."),
    layout: str = typer.Option("auto"),
    permissive_only: bool = typer.Option(False, help="Only images whose licence allows commercial use."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Checkpoint to compare an artifact with: "
                                             "agreement, the flipped images, and the changed findings at the operating point."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Evaluate an artifact that failed its gate."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for eval.json, eval.md and confusion.png."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals."),
    shortcut_probe: bool = typer.Option(False, "--shortcut-probe", help="Checkpoints: also classify every image "
                                        "zoomed, with its border blanked, with only its border, and blank, per source "
                                        "(does the model read the lungs or the film?). Five forward passes per image."),
    band: float = typer.Option(0.1, "--band", min=0.02, max=0.4, help="Border width for --shortcut-probe, share of the side."),
) -> None:
    """Accuracy, per-class and per-source sensitivity/specificity, macro AUC, confusion matrix, 95% intervals,
    share of inputs the guard rejected; for a checkpoint or any exported artifact."""
    from edgecxr.data import load_samples
    from edgecxr.train.evaluate import evaluate_model, is_checkpoint, markdown_report, select_split, write_report

    if shortcut_probe and not is_checkpoint(model):
        _fail("--shortcut-probe needs a checkpoint (.safetensors): it alters the model's input tensor, which an "
              "exported artifact's runtime does not expose. Run it on the checkpoint you exported.", EXIT_USAGE)
    try:
        samples = select_split(load_samples(data, layout, permissive_only=permissive_only), split_name, data)
        result = evaluate_model(model, samples, n_boot=n_boot, reference=reference, allow_unverified=allow_unverified)
        if shortcut_probe:
            from edgecxr.train.shortcuts import shortcut_probe as probe

            result["shortcut_probe"] = probe(model, samples, band)
    except EdgeCXRError as exc:
        _fail(str(exc), _code_for(exc))
    if out:
        write_report(result, out)
        console.print(f"wrote {escape(str(out))}/eval.json, eval.md, confusion.png")
    console.print(escape(markdown_report(result)))


@app.command()
def calibrate(
    checkpoint: Path = typer.Argument(..., help="A trained checkpoint (.safetensors)."),
    data: Path = typer.Argument(..., help="Dataset with train and val splits (the one it was trained on)."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write (with guard, temperature and operating point)."),
    ood: Optional[Path] = typer.Option(None, "--ood", help="Folder of non-CXR images to report the guard's rejection rate."),
    permissive_only: bool = typer.Option(False, help="Fit the guard's statistics on permissive training images only."),
    margin: float = typer.Option(1.0, help="Guard threshold = margin x the 99.5th percentile of val CXR scores (combined guard: margin x its rescaled limit 1)."),
    outlier_exclude: Optional[Path] = typer.Option(
        None, "--outlier-exclude",
        help="Folder of training images to leave out of the damaged copies the outlier guard learns from (e.g. the "
             "sources of the --ood set's hard cases: calibration_data/calib for ood_data)."),
    op_margin: float = typer.Option(0.15, "--op-margin", min=0.0, help="Lower the COVID-19 threshold until every val "
                                    "COVID-19 image it keeps lies this many log-odds above it (room for INT8/bf16 "
                                    "error; 0: halfway to the next val score only)."),
    op_target: float = typer.Option(0.95, "--op-target", min=0.5, max=1.0, help="Val COVID-19 sensitivity the "
                                    "operating point must reach; lower it (e.g. 0.9) to call fewer non-COVID-19 images "
                                    "COVID-19 (benchmarks/ablation.md, 'At the operating point', measures the trade)."),
    layout: str = typer.Option("auto"),
) -> None:
    """Fit the input guard, temperature scaling and the COVID-19 operating point on train/val; write them
    into a new checkpoint, which every export then carries."""
    import hashlib

    from edgecxr.runtime import iter_images
    from edgecxr.train.calibrate import calibrate as run_calibrate

    try:
        _, parts = _split_samples(data, layout, False)
        train = [s for s in parts["train"] if not (permissive_only and s.licence_nc)]
        exclude = {hashlib.sha256(p.read_bytes()).hexdigest() for p in iter_images([outlier_exclude])} if outlier_exclude else None
        report = run_calibrate(checkpoint, train, parts["val"], out, ood=iter_images([ood]) if ood else None,
                               margin=margin, outlier_exclude=exclude, op_margin=op_margin, op_target=op_target)
    except EdgeCXRError as exc:
        _fail(str(exc), _code_for(exc))
    console.print_json(json.dumps(report, default=float))


@app.command()
def keygen(
    private: Path = typer.Option(Path("edgecxr-signing.pem"), "--private", help="Private key file (keep it secret)."),
    public: Path = typer.Option(Path("edgecxr-signing.pub.pem"), "--public", help="Public key file (for devices)."),
) -> None:
    """Make an Ed25519 key pair for signing exports (`edgecxr export --sign PRIVATE`)."""
    from edgecxr.signing import generate_keypair

    if private.exists():
        _fail(f"{private} exists; refusing to overwrite a key.", EXIT_USAGE)
    try:
        generate_keypair(private, public)
    except EdgeCXRError as exc:
        _fail(str(exc), EXIT_USAGE)
    console.print(f"wrote {escape(str(private))} (secret) and {escape(str(public))}")


# ---------------------------------------------------------------- export / predict / bench
def _default_checkpoint() -> Path:
    from edgecxr.resources import default_checkpoint

    return default_checkpoint()


@app.command()
def export(
    checkpoint: Optional[Path] = typer.Argument(None, help="Checkpoint (.safetensors). Default: the shipped model."),
    target: str = typer.Option("onnx-fp32", "--target", "-t", help="Target name from export/ (or a .toml path)."),
    precision: Optional[str] = typer.Option(None, help="Override: fp32 | fp16 | int8."),
    batch: Optional[int] = typer.Option(None, help="Fixed batch size (default: the target's, usually dynamic)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Force a dynamic batch dimension."),
    calib: Optional[list[Path]] = typer.Option(None, help="Calibration image folder(s) (class folders). Default: calibration_data/calib."),
    verify_on: Optional[list[Path]] = typer.Option(None, "--verify-on", help="Verification image folder(s), disjoint "
                                                   "from calibration. Default: calibration_data/val + eval."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder. Default: exports/<checkpoint>-<sha8>/<target>."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the verification gate (artifact stays unverified)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a matching export exists."),
    heatmaps: bool = typer.Option(False, "--heatmaps", help="Also output the spatial maps that `predict --heatmaps` "
                                  "needs (costs latency on some engines: benchmarks/results/output-overhead.md)."),
    sign: Optional[Path] = typer.Option(None, "--sign", help="Ed25519 private key: sign the sidecar (see `edgecxr keygen`)."),
    reduce_range: Optional[bool] = typer.Option(None, "--reduce-range/--no-reduce-range", help="INT8: 7-bit weights, "
                                                "so the artifact also computes right on CPUs without VNNI (AVX2-only). "
                                                "Default: the target's (auto: when this CPU lacks VNNI)."),
    list_targets: bool = typer.Option(False, "--list", help="List the available targets and exit."),
) -> None:
    """Export a checkpoint to ONNX / OpenVINO / TensorRT, then verify it on real images."""
    from edgecxr.export.targets import list_targets as _targets
    from edgecxr.export.targets import load_target

    if list_targets:
        t = Table(title="export targets")
        for col in ("name", "backend", "precision", "description"):
            t.add_column(col)
        for name in _targets():
            try:
                tg = load_target(name)
            except EdgeCXRError as exc:
                _fail(str(exc), EXIT_USAGE)
            t.add_row(escape(name), tg.backend, tg.precision, escape(tg.description))
        console.print(t)
        return
    from rich.progress import Progress

    from edgecxr.export.core import export as run_export

    ck = checkpoint or _default_checkpoint()
    try:
        with Progress(console=err, transient=True) as prog:
            task = prog.add_task(f"export {escape(target)}: building + verifying", total=None)
            tgt = load_target(target, precision, batch, dynamic or None, heatmaps or None, reduce_range)
            res = run_export(ck, tgt, precision=precision, batch=batch, dynamic=dynamic or None, calib=calib,
                             verify_on=verify_on, out=out, verify=not no_verify, force=force,
                             progress=lambda n: prog.advance(task, n), heatmaps=heatmaps or None,
                             step=lambda s: prog.update(task, description=f"export {escape(s)}"))
        if sign:
            from edgecxr.signing import sign_artifact

            sign_artifact(res.artifact, sign)
    except EdgeCXRError as exc:
        _fail(str(exc), _code_for(exc))
    console.print(sidecar_table(res.sidecar, f"{res.sidecar.target.get('name')} -> {res.artifact}"
                                + (" (cached)" if res.cached else "") + (" (signed)" if sign else "")))
    if res.sidecar.verification.verdict == "failed":
        _fail("verification failed: " + "; ".join(res.sidecar.verification.reasons) + ". The artifact is marked "
              "unverified; try another calibration method ([int8] calibration in the target file) or precision.",
              EXIT_UNVERIFIED)


@app.command()
def verify(
    artifact: Path = typer.Argument(..., help="Exported artifact (its sidecar beside it), or its export folder."),
    images: Optional[list[Path]] = typer.Option(None, "--images", help="Folder(s) holding the gate's images (found by "
                                                "sha256). Default: calibration_data/val + eval."),
) -> None:
    """Re-run an artifact's export gate on this CPU (no torch needed): INT8 kernels differ between CPU classes.

    The runtime refuses an INT8 (or OpenVINO bf16) artifact on a CPU class other than the one its gate ran on
    until this command has passed here; the result is written beside the artifact (<artifact>.edgecxr-cpu.json)."""
    from rich.progress import Progress

    from edgecxr.runtime.isa import describe, record_path, verify_here
    from edgecxr.sidecar import resolve_artifact

    try:
        artifact = resolve_artifact(artifact)
        with Progress(console=err, transient=True) as prog:
            task = prog.add_task("verify on this CPU", total=None)
            rec = verify_here(artifact, images, progress=lambda n: prog.advance(task, n))
    except EdgeCXRError as exc:
        _fail(str(exc), _code_for(exc))
    t = Table(title=escape(f"{artifact}: gate on this CPU"), show_header=False)
    colour = "green" if rec["verdict"] == "passed" else "red"
    t.add_row("CPU", escape(f"{rec['cpu']} ({describe(rec['isa'])})"))
    t.add_row("runs as", escape(json.dumps(rec["runs"])))
    lo, hi = rec["flip_rate_ci95"]
    t.add_row("verification", f"[{colour}]{rec['verdict']}[/]: " + escape(
        f"agreement {rec['agreement']:.4f} ({rec['flips']} flips of {rec['images']}, flip rate 95% CI "
        f"[{lo:.1%}, {hi:.1%}]), accuracy {rec['accuracy']:.4f} vs reference {rec['accuracy_reference']:.4f}"
        + (f", guard agreement {rec['guard_agreement']:.4f}" if rec.get("guard_agreement") is not None else "")
        + ("; " + "; ".join(rec["reasons"]) if rec["reasons"] else "")))
    t.add_row("record", escape(str(record_path(artifact))))
    console.print(t)
    if rec["verdict"] != "passed":
        _fail("this artifact is not verified on this CPU and will not load here; export it on a CPU like this one.",
              EXIT_UNVERIFIED)


def sidecar_table(side, title: str) -> Table:
    """An artifact's sidecar as a two-column table (all text escaped)."""
    v = side.verification
    t = Table(title=escape(title), show_header=False)
    t.add_row("engine", escape(f"{side.backend} {side.engine.get('version', '')} {side.precision}"))
    if "runs" in side.engine:
        t.add_row("runs as", escape(json.dumps(side.engine["runs"])))
    if (side.engine.get("int8") or {}).get("float_nodes"):
        t.add_row("kept in float", escape(", ".join(side.engine["int8"]["float_nodes"])))
    if done := [text for key, text in REWRITES.items() if side.engine.get(key)]:
        t.add_row("graph rewrites", ", ".join(done))
    t.add_row("size", f"{side.total_bytes:,} bytes")
    t.add_row("export time", f"{side.export_seconds} s")
    if v.verdict != "skipped":
        colour = "green" if v.verdict == "passed" else "red"
        t.add_row("verification", f"[{colour}]{v.verdict}[/]: " + escape(
            f"agreement {v['agreement']:.4f} ({v['flips']} flips of {v['images']}; min {v['tolerance']['min_agreement']}), "
            f"accuracy {v['accuracy']:.4f} vs reference {v['accuracy_reference']:.4f} "
            f"(max drop {v['tolerance']['max_accuracy_drop']})"
            + (f", guard agreement {v['guard_agreement']:.4f}" if v.get("guard_agreement") is not None else "")
            + (f", {o['positive_class']} sensitivity at the operating point {o['sensitivity']:.4f} vs "
               f"{o['sensitivity_reference']:.4f} (of {o['positives']})"
               if (o := v.get("operating_point")) and "sensitivity" in o else "")))
        if v.get("isa"):
            from edgecxr.runtime.isa import describe

            t.add_row("verified on", escape(describe(v["isa"])))
    else:
        t.add_row("verification", "[yellow]skipped (--no-verify): artifact is unverified[/]")
    if side.guard:
        t.add_row("input guard", escape(f"{side.guard['method']} score, threshold {side.guard['threshold']:.2f}"))
    if side.operating_point:
        op = side.operating_point
        t.add_row("operating point", escape(f"{op.get('positive_class')} at p >= {op.get('threshold', float('nan')):.3f}, "
                                            f"temperature {op.get('temperature', 1.0):.2f}"))
    return t


@app.command()
def predict(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (PNG, JPEG, DICOM)."),
    model: Path = typer.Option(..., "--model", "-m", help="Exported artifact (model.onnx, model.xml, model.engine), or its export folder."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines (schema in README) instead of a table."),
    batch: Optional[int] = typer.Option(None, help="Batch size (default: the artifact's maximum)."),
    threads: Optional[int] = typer.Option(None, help="Engine threads."),
    allow_unverified: bool = typer.Option(False, "--allow-unverified", help="Use an artifact whose verification failed or was skipped."),
    no_guard: bool = typer.Option(False, "--no-guard", help="Turn the input guard off (not for patients)."),
    isolate: bool = typer.Option(True, "--isolate/--no-isolate", help="Decode DICOM in a worker process, so a "
                                 "crashing decoder costs one file, not the run."),
    isolate_all: bool = typer.Option(False, "--isolate-all", help="Decode every file (PNG/JPEG/TIFF/BMP too) in the "
                                     "worker process: for untrusted sources; costs a copy of each decoded image."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="Append one JSON line per input to this file."),
    sr: Optional[Path] = typer.Option(None, "--sr", help="Write a DICOM Structured Report per DICOM input into this folder."),
    heatmaps: Optional[Path] = typer.Option(None, "--heatmaps", help="Write an overlay PNG and the raw map (.npy) "
                                            "of each finding's class-activation map into this folder."),
    trusted_key: Optional[list[Path]] = typer.Option(None, "--trusted-key", help="Accept only artifacts signed by this "
                                                     "Ed25519 public key (repeatable; or EDGECXR_TRUSTED_KEYS)."),
) -> None:
    """Classify images with an exported artifact. Exit 0: all ok; 1: an input failed; 3: an input was rejected."""
    from edgecxr.imaging import IMAGE_SUFFIXES
    from edgecxr.runtime import iter_images, load

    if no_guard:
        err.print("[yellow]warning:[/] input guard off (--no-guard): every readable image gets a finding, "
                  "even a hand X-ray or a photo. Not for patients.")
    try:
        m = load(model, allow_unverified=allow_unverified, threads=threads, guard=not no_guard,
                 isolate_decoding="all" if isolate_all else isolate, audit=audit, trusted_keys=trusted_key or None)
    except EdgeCXRError as exc:
        _fail(str(exc), _code_for(exc))
    skipped: list[Path] = []
    files = iter_images(paths, skipped)
    if skipped:  # said, not silent: a folder may hold images under names we do not recognise
        shown = ", ".join(str(f) for f in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        err.print(f"[yellow]skipped[/] {len(skipped)} file(s) in the folders that are neither images by suffix "
                  f"({', '.join(sorted(IMAGE_SUFFIXES))}) nor DICOM by content: {escape(shown)}")
    if not files:
        _fail("no images found in the given paths.", EXIT_USAGE)
    with m:
        results = m.predict(files, batch=batch, heatmaps=heatmaps is not None)
        if heatmaps is not None:
            _write_heatmaps(m, files, results, heatmaps)
        if sr is not None:
            from edgecxr import __version__
            from edgecxr.runtime.sr import write_sr

            for f, r in zip(files, results):
                try:
                    write_sr(f, r, m.identity, __version__, sr, m.operating_point)
                except EdgeCXRError as exc:
                    _fail(str(exc), EXIT_USAGE)
                except Exception as exc:  # a source header highdicom cannot reference: that file gets no SR
                    err.print(f"[yellow]no SR for[/] {escape(str(f))}: {escape(f'{type(exc).__name__}: {exc}')}")
    if as_json:
        for r in results:
            print(json.dumps(r.to_dict(), allow_nan=False))
    else:
        ident = m.identity
        t = Table(title=escape(f"{ident['name']} ({ident['backend']} {ident['precision']}, sha256 {ident['sha256'][:12]})"))
        for col in ("file", "status", "finding"):
            t.add_column(col)
        for c in m.classes:
            t.add_column(escape(c), justify="right")
        op = m.operating_point
        if op.get("positive_class") and op.get("threshold") is not None:
            target = f", chosen for >= {100 * op['target_sensitivity']:.0f}% sensitivity on val" \
                if isinstance(op.get("target_sensitivity"), (int, float)) else ""
            t.caption = escape(f"finding: {op['positive_class']} whenever its probability reaches "
                               f"{op['threshold']:.3f} (the operating point{target}), otherwise the most probable "
                               "other class; * marks a finding that is not the most probable class")
        for r in results:
            if r.ok:
                top = max(r.probabilities, key=r.probabilities.get)
                mark = "*" if r.finding and r.finding != top else ""
                t.add_row(escape(r.source), "[green]ok[/]", escape((r.finding or "") + mark),
                          *[f"{r.probabilities[c]:.3f}" for c in m.classes])
            elif r.status == "rejected":
                t.add_row(escape(r.source), "[yellow]rejected[/]", "", *["" for _ in m.classes])
            else:
                t.add_row(escape(r.source), "[red]error[/]", "", *["" for _ in m.classes])
        console.print(t)
    for r in results:
        if r.status == "rejected":
            err.print(f"[yellow]rejected:[/] {escape(r.source)}: {escape(r.reason or '')}")
        elif r.status == "error":
            err.print(f"[red]failed:[/] {escape(r.reason or '')}")
    if any(r.status == "error" for r in results):
        raise typer.Exit(EXIT_INPUT)
    if any(r.status == "rejected" for r in results):
        raise typer.Exit(EXIT_REJECTED)


def _write_heatmaps(m, files, results, folder: Path) -> None:
    """<folder>/<n>-<stem>.png (overlay on the model's view of the image, with a caption) and .npy (raw map)."""
    import numpy as np

    from edgecxr.runtime.heatmap import overlay_png

    if not m.sidecar.heatmap:
        err.print("[yellow]warning:[/] this artifact carries no heatmap outputs; export it with "
                  "`edgecxr export --heatmaps` for --heatmaps.")
        return
    folder.mkdir(parents=True, exist_ok=True)
    cfg = m.preprocess_config
    for i, (f, r) in enumerate(zip(files, results)):
        if r.heatmap is None:
            continue
        view = m.prepare(f)[0] * cfg.std[0] + cfg.mean[0]  # the gray image as the model saw it
        stem = f"{i:04d}-{Path(f).stem}"
        np.save(folder / f"{stem}.npy", r.heatmap.astype(np.float32))
        overlay_png(view, r.heatmap, folder / f"{stem}.png", f"{r.finding} p={r.probabilities[r.finding]:.2f}")


bench_app = typer.Typer(help="Benchmark latency and accuracy across engines; `bench compare` merges runs.",
                        invoke_without_command=True, no_args_is_help=False)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    checkpoint: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint. Default: the shipped model."),
    data: Optional[list[Path]] = typer.Option(None, "--data", help="Labelled image folder(s). Default: calibration_data/eval."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated targets (torch-fp32, onnx-int8, ...)."),
    batch: int = typer.Option(8, help="Batch size for the throughput measurement."),
    iters: int = typer.Option(50, help="Minimum timed runs at batch 1."),
    warmup: int = typer.Option(10, help="Warm-up runs."),
    seconds: float = typer.Option(2.0, help="Minimum timed seconds at batch 1."),
    rounds: int = typer.Option(3, min=1, help="Timing rounds over all rows, interleaved; each row keeps its median "
                                              "(one pass on a shared machine can flatter or punish a row)."),
    threads: Optional[int] = typer.Option(None, help="Threads for every engine (default: each engine's own)."),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Folder for bench.json/.csv/.md/.png."),
    exports: Path = typer.Option(Path("exports"), help="Where exported artifacts are cached."),
    onednn_isa: Optional[str] = typer.Option(None, "--onednn-isa", help="Run OpenVINO and torch on a lower ISA's "
                                             "kernels (e.g. AVX2: what an AVX2-only CPU runs), through oneDNN's cap; "
                                             "INT8 targets are then built and gated for that class, and ONNX Runtime "
                                             "rows are skipped (it ignores the cap). Default --exports then: exports-onednn-<isa>."),
) -> None:
    """Export (cached) and measure every target on this machine: latency p50/p90/p99, cold start, throughput,
    memory, size, accuracy and agreement with PyTorch FP32."""
    if ctx.invoked_subcommand:
        return
    if onednn_isa:
        from edgecxr.hardware import onednn_cap_env

        try:
            cap_env = onednn_cap_env(onednn_isa)
        except ValueError as exc:
            _fail(str(exc), EXIT_USAGE)
        loaded = [m for m in ("torch", "openvino") if m in sys.modules]
        if loaded and any(os.environ.get(k) != v for k, v in cap_env.items()):
            _fail(f"--onednn-isa must be set before {' and '.join(loaded)} is loaded; start the process with "
                  + " ".join(f"{k}={v}" for k, v in cap_env.items()) + " instead.", EXIT_USAGE)
        os.environ.update(cap_env)  # read by oneDNN and ATen in this process (export) and in every bench worker
        if exports == Path("exports"):  # keep the native builds: an export for another CPU class would replace them
            exports = Path(f"exports-onednn-{cap_env['ONEDNN_MAX_CPU_ISA'].lower()}")
    from edgecxr.bench.harness import DEFAULT_TARGETS, BenchConfig, run_bench
    from edgecxr.bench.report import CAVEAT, rich_table, write
    from edgecxr.resources import eval_dir

    cfg = BenchConfig(checkpoint=checkpoint or _default_checkpoint(), data=data or [eval_dir()],
                      targets=targets.split(",") if targets else list(DEFAULT_TARGETS), batch=batch, warmup=warmup,
                      iters=iters, min_seconds=seconds, threads=threads, out=out, export_root=exports, rounds=rounds)
    if not cfg.checkpoint.is_file():
        _fail(f"{cfg.checkpoint}: no such checkpoint.")
    from rich.progress import Progress

    with Progress(console=err, transient=True) as prog:
        task = prog.add_task("bench", total=len(cfg.targets))

        def step(name: str) -> None:  # called as each target starts
            prog.update(task, description=f"bench: {escape(name)} (export if needed, then measure)", advance=1)

        try:
            run = run_bench(cfg, progress=step)
        except EdgeCXRError as exc:
            _fail(str(exc), _code_for(exc))
    rows = write(run, out)
    console.print(rich_table(rows, "edgecxr bench (sorted by batch-1 latency)"))
    console.print(f"[dim]{CAVEAT}[/]")
    console.print(f"wrote {escape(str(out))}/bench.json, bench.csv, bench.md, bench.png")


@bench_app.command("compare")
def bench_compare(
    runs: list[Path] = typer.Argument(..., help="bench.json files from several machines."),
    out: Path = typer.Option(Path("bench-compare"), "--out"),
) -> None:
    """Merge bench runs from several machines into one table and one plot."""
    from edgecxr.bench.report import compare, rich_table

    for r in runs:
        if not r.is_file():
            _fail(f"{r}: no such file.", EXIT_USAGE)
    rows = compare(runs, out)
    console.print(rich_table(rows, "edgecxr bench compare"))
    console.print(f"wrote {escape(str(out))}/compare.md, compare.png")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
