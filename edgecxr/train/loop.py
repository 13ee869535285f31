"""Training: AdamW, warm-up + cosine schedule, optional class-balanced sampling, AMP on CUDA,
checkpoint every epoch with resume, best-on-validation kept, metrics per epoch to JSON and CSV.

Multi-GPU / multi-node: launch with torchrun, e.g.
``torchrun --nproc_per_node 4 -m edgecxr.cli train DATA --out runs/x`` (NCCL on CUDA, gloo on CPU).
Only rank 0 writes files.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler

from edgecxr import __version__
from edgecxr.artifact import atomic_write_json
from edgecxr.checkpoint import save_checkpoint
from edgecxr.data.layouts import Sample
from edgecxr.data.torchdata import CXRDataset
from edgecxr.metrics import per_source, point_metrics, worst_source_sensitivity
from edgecxr.models import build_model
from edgecxr.preprocess import PreprocessConfig

DEFAULT_CLASSES = ["COVID-19", "Normal", "Pneumonia"]


@dataclass
class TrainConfig:
    arch: str = "covid-densenet"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    balanced: bool = False
    class_weighted_loss: bool = False  # weight the loss by n / (classes * count) of each class (sklearn's "balanced")
    seed: int = 0
    size: int = 224
    resize: str = "crop"
    equalize: bool = False  # histogram equalisation in preprocessing (carried in the checkpoint)
    smooth: float = 0.0  # Gaussian low-pass sigma (px) in preprocessing, 0 = off (carried in the checkpoint)
    workers: int = 0
    weights: str | None = None
    amp: bool = True
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)
    augment: str = "light"  # light | strong | robust | grain | none (edgecxr.data.torchdata.cxr_augmentation)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # MixUp Beta(alpha, alpha) on each training batch (0: off); soft targets, against noisy labels
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); val and best use the average
    select: str = "macro_f1"  # best-checkpoint rule: macro_f1 | worst_source (mean of macro F1 and worst-source COVID-19 sensitivity)
    bf16: bool | None = None  # CPU bf16 autocast + channels_last; None: on when the CPU has AVX-512 BF16 / AMX
    # val sources left out of the selection score (still validated and logged): a source left out of training must
    # not steer which checkpoint is kept, or a leave-source-out run is chosen partly on the source it was meant not to see
    select_without: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and targets over a loader."""
    model.eval()
    probs, ys = [], []
    for x, y in loader:
        probs.append(torch.softmax(model(x.to(device)).float(), 1).cpu().numpy())
        ys.append(np.asarray(y))
    return np.concatenate(probs), np.concatenate(ys)


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX-512 BF16 or AMX-BF16)."""
    from edgecxr.hardware import cpu_info

    isa = cpu_info()["isa"]
    return "AVX-512 BF16" in isa or "AMX-BF16" in isa


def selection_score(select: str, vm: dict, ys: np.ndarray, probs: np.ndarray, classes: list[str],
                    sources: list[str | None]) -> float:
    """The number the best checkpoint maximises on val. ``worst_source`` does not reward a model that
    recognises one COVID-19 hospital only: it averages macro F1 with the worst source's COVID-19 sensitivity."""
    f1 = vm["macro_f1"] if not math.isnan(vm["macro_f1"]) else vm["accuracy"]
    if select == "macro_f1":
        return f1
    if select == "worst_source":
        cls = "COVID-19" if "COVID-19" in classes else classes[0]
        w = worst_source_sensitivity(ys, probs, classes, sources, cls)
        return f1 if math.isnan(w) else 0.5 * (f1 + w)
    raise ValueError(f"unknown selection rule {select!r}; choose macro_f1 or worst_source")


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class Run:
    """What one training run holds between its steps."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    out: Path
    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    train_dl: DataLoader
    val_dl: DataLoader
    sampler: object
    gen: torch.Generator
    val_sources: list
    amp_dtype: torch.dtype | None  # None: no autocast
    channels_last: bool
    ema: nn.Module | None = None
    mix: object | None = None  # torchvision.transforms.v2.MixUp, or None
    start_epoch: int = 0
    best: float = -1.0
    history: list = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def setup_device() -> tuple[torch.device, int, int]:
    """Device, rank and world size; joins the process group under torchrun (NCCL on CUDA, gloo on CPU)."""
    rank, world, local_rank = _dist_info()
    use_cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return device, rank, world


def make_loaders(cfg: TrainConfig, train_samples: list[Sample], val_samples: list[Sample], rank: int, world: int):
    """(train loader, val loader, sampler, generator): class-balanced or distributed sampling."""
    pcfg = PreprocessConfig(size=cfg.size, resize=cfg.resize, equalize=cfg.equalize, smooth=cfg.smooth)
    train_ds = CXRDataset(train_samples, cfg.classes, pcfg, augment=cfg.augment)
    val_ds = CXRDataset(val_samples, cfg.classes, pcfg, augment=False)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    if cfg.balanced:
        counts = np.bincount(train_ds.targets, minlength=len(cfg.classes)).astype(float)
        w = [1.0 / counts[t] for t in train_ds.targets]
        sampler = WeightedRandomSampler(w, num_samples=math.ceil(len(w) / world), replacement=True, generator=gen)
    elif world > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    else:
        sampler = None
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, shuffle=sampler is None,
                          generator=gen if sampler is None else None, num_workers=cfg.workers,
                          drop_last=len(train_ds) > cfg.batch_size)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size * 2, num_workers=cfg.workers)
    return train_dl, val_dl, sampler, gen


def build_run(cfg: TrainConfig, train_samples: list[Sample], val_samples: list[Sample], out: Path) -> Run:
    """Model, optimiser, schedule, loss, EMA and loaders for ``cfg``."""
    device, rank, world = setup_device()
    _seed_all(cfg.seed + rank)
    out = Path(out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    train_dl, val_dl, sampler, gen = make_loaders(cfg, train_samples, val_samples, rank, world)
    use_cuda = device.type == "cuda"
    model = build_model(cfg.arch, num_classes=len(cfg.classes), weights=cfg.weights).to(device)
    cpu_bf16 = (not use_cuda) and cfg.amp and (cpu_has_bf16() if cfg.bf16 is None else cfg.bf16)
    channels_last = use_cuda or cpu_bf16
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(train_dl))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps * cfg.epochs, max(1, round(cfg.warmup_epochs * steps))))
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    amp_dtype = torch.float16 if use_cuda and cfg.amp else (torch.bfloat16 if cpu_bf16 else None)
    mix = None
    if cfg.mixup < 0:
        raise ValueError(f"mixup alpha must be >= 0 (0 turns it off), not {cfg.mixup}")
    if cfg.mixup > 0:
        from torchvision.transforms import v2

        mix = v2.MixUp(alpha=cfg.mixup, num_classes=len(cfg.classes))
    weight = None
    if cfg.class_weighted_loss:
        counts = np.bincount(train_dl.dataset.targets, minlength=len(cfg.classes)).astype(float)
        if (counts == 0).any():
            raise ValueError("class-weighted loss: a class has no training image: "
                             + ", ".join(c for c, n in zip(cfg.classes, counts) if n == 0))
        weight = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32, device=device)
    return Run(cfg, device, rank, world, out, model, net, opt, sched,
               torch.amp.GradScaler("cuda", enabled=use_cuda and cfg.amp),
               nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing), train_dl, val_dl, sampler, gen,
               [s.source for s in val_samples], amp_dtype, channels_last, ema, mix)


def resume_from(run: Run, last: Path) -> dict:
    """Restore model, optimiser, schedule, scaler, EMA and history from ``last.pt``; return its recorded meta."""
    st = torch.load(last, map_location="cpu", weights_only=False)
    run.model.load_state_dict(st["model"])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    run.scaler.load_state_dict(st["scaler"])
    run.start_epoch, run.best, run.history = st["epoch"] + 1, st["best"], st["history"]
    if run.ema is not None and "ema" in st:
        run.ema.load_state_dict(st["ema"])
    return st.get("meta") or {}


def train_one_epoch(run: Run, epoch: int, on_step=None) -> dict:
    """One pass over the training loader; returns loss and throughput."""
    cfg = run.cfg
    # every epoch's randomness derives from (seed, epoch, rank): a resumed run repeats it exactly
    _seed_all(cfg.seed * 7919 + epoch * 104729 + run.rank)
    run.gen.manual_seed(cfg.seed * 7919 + epoch * 104729 + 1000 + run.rank)
    if isinstance(run.sampler, DistributedSampler):
        run.sampler.set_epoch(epoch)
    run.net.train()
    t0, seen, loss_sum, steps = time.perf_counter(), 0, 0.0, 0
    for x, y in run.train_dl:
        x, y = x.to(run.device, non_blocking=True), y.to(run.device).long()
        if run.mix is not None:  # global torch RNG, seeded per epoch above: a resumed run mixes the same pairs
            x, y = run.mix(x, y)  # y becomes soft targets (one-hot mixtures); the loss takes them as they are
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
            loss = run.loss_fn(run.net(x), y)
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        seen += len(y)
        loss_sum += float(loss.detach()) * len(y)
        steps += 1
        if on_step:
            on_step(loss_sum / seen)
        if cfg.max_steps and epoch * len(run.train_dl) + steps >= cfg.max_steps:
            break
    return {"train_loss": loss_sum / max(seen, 1), "train_images_per_s": seen * run.world / (time.perf_counter() - t0),
            "steps": steps}


def validate(run: Run) -> tuple[dict, float, dict]:
    """Val metrics of the evaluated model (the EMA when on), the selection score, and per-source sensitivities."""
    probs, ys = predict_probs(run.eval_model, run.val_dl, run.device)
    vm = point_metrics(ys, probs, run.cfg.classes)
    keep = np.array([s not in run.cfg.select_without for s in run.val_sources], bool)
    chosen_on = vm if keep.all() else point_metrics(ys[keep], probs[keep], run.cfg.classes)
    score = selection_score(run.cfg.select, chosen_on, ys[keep], probs[keep], run.cfg.classes,
                            [s for s, k in zip(run.val_sources, keep) if k])
    sens = {f"val_sens_{c}_{src}": v["value"] for src, r in per_source(ys, probs, run.cfg.classes, run.val_sources).items()
            for c, v in r["sensitivity"].items()}
    return vm, score, sens


def save_epoch(run: Run, epoch: int, vm: dict, score: float, meta_base: dict) -> None:
    """best.safetensors when the score improved; last.pt, metrics.json and metrics.csv every epoch, curves.png every
    5 epochs and at the end (rank 0)."""
    if score > run.best:
        run.best = score
        save_checkpoint(run.eval_model.state_dict(), dict(meta_base, epoch=epoch + 1, val=vm, val_score=score),
                        run.out / "best.safetensors")
    state = {"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
             "scaler": run.scaler.state_dict(), "epoch": epoch, "best": run.best, "history": run.history,
             "meta": meta_base}
    if run.ema is not None:
        state["ema"] = run.ema.state_dict()
    _atomic_torch_save(state, run.out / "last.pt")
    atomic_write_json(run.out / "metrics.json", run.history)
    with open(run.out / "metrics.csv", "w", newline="") as fh:
        keys = list(dict.fromkeys(k for h in run.history for k in h))
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(run.history)
    if (epoch + 1) % 5 and epoch + 1 < run.cfg.epochs:
        return  # the picture every 5 epochs and at the end: plotting costs ~0.3 s, an epoch on a GPU ~1 s
    try:  # a picture of the same numbers; never worth stopping a run for
        from edgecxr.train.curves import plot_curves

        plot_curves(run.history, run.out / "curves.png", f"{run.out.name} ({meta_base.get('arch', '')})")
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"curves.png not written: {exc}", stacklevel=1)


def trained_on(run: Run) -> dict:
    """Where the weights were trained: device, autocast dtype, torch version (GPU and CPU seeds differ numerically)."""
    if run.device.type == "cuda":
        where = torch.cuda.get_device_name(run.device)
    else:
        from edgecxr.hardware import cpu_info

        info = cpu_info()
        where = f"{info.get('model', 'CPU')}; ISA {', '.join(info.get('isa', []))}"
    return {"device": run.device.type, "name": where, "world_size": run.world,
            "autocast": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype is not None else "fp32",
            "torch": torch.__version__}


def train(cfg: TrainConfig, train_samples: list[Sample], val_samples: list[Sample], out: Path,
          resume: bool = True, data_info: dict | None = None, progress: bool = True) -> dict:
    """Train and return the run summary. ``out`` gets last.pt, best.safetensors(+.json), metrics.{json,csv}."""
    run = build_run(cfg, train_samples, val_samples, out)
    where, before = trained_on(run), {}
    if resume and (run.out / "last.pt").is_file():
        before = resume_from(run, run.out / "last.pt").get("trained_on") or {}
    if before and any(before.get(k) != where[k] for k in ("device", "name", "autocast")):
        where["earlier_epochs_on"] = before  # resumed on another machine: keep where the first epochs ran
    meta_base = {"edgecxr_version": __version__, "arch": cfg.arch, "classes": cfg.classes,
                 "preprocess": PreprocessConfig(size=cfg.size, resize=cfg.resize, equalize=cfg.equalize, smooth=cfg.smooth).to_dict(),
                 "train_config": asdict(cfg), "data": data_info or {}, "trained_on": where}
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    steps_per_epoch = max(1, len(run.train_dl))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not (progress and run.main)) as bar:
        for epoch in range(run.start_epoch, cfg.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            tr = train_one_epoch(run, epoch, on_step=lambda loss: bar.update(task, advance=1, info=f"loss {loss:.3f}"))
            vm, score, sens = validate(run)
            row = {"epoch": epoch + 1, "train_loss": tr["train_loss"], "train_images_per_s": tr["train_images_per_s"],
                   "val_accuracy": vm["accuracy"], "val_macro_f1": vm["macro_f1"], "val_macro_auc": vm["macro_auc"],
                   "val_score": score, "lr": run.sched.get_last_lr()[0], **sens}
            run.history.append(row)
            bar.update(task, info=f"loss {row['train_loss']:.3f} val acc {vm['accuracy']:.3f} f1 {vm['macro_f1']:.3f}")
            if run.main and progress:
                bar.console.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, {row['train_images_per_s']:.1f} img/s, "
                                  f"val acc {vm['accuracy']:.4f}, val macro F1 {vm['macro_f1']:.4f}")
            if run.main:
                save_epoch(run, epoch, vm, score, meta_base)
            if cfg.max_steps and (epoch * steps_per_epoch + tr["steps"]) >= cfg.max_steps:
                break
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"best_val_score": run.best, "best_val_macro_f1": max((h["val_macro_f1"] for h in run.history), default=run.best),
            "epochs": len(run.history), "history": run.history, "out": str(run.out)}
