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
    seed: int = 0
    size: int = 224
    resize: str = "crop"
    workers: int = 0
    weights: str | None = None
    amp: bool = True
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests)
    augment: str = "light"  # light | strong | none (edgecxr.data.torchdata.cxr_augmentation)
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); val and best use the average
    select: str = "macro_f1"  # best-checkpoint rule: macro_f1 | worst_source (mean of macro F1 and worst-source COVID-19 sensitivity)
    bf16: bool | None = None  # CPU bf16 autocast + channels_last; None: on when the CPU has AVX-512 BF16 / AMX
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


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


def train(cfg: TrainConfig, train_samples: list[Sample], val_samples: list[Sample], out: Path,
          resume: bool = True, data_info: dict | None = None, progress: bool = True) -> dict:
    """Train and return the run summary. ``out`` gets last.pt, best.safetensors(+.json), metrics.{json,csv}."""
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    use_cuda = torch.cuda.is_available()
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    _seed_all(cfg.seed + rank)
    out = Path(out)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)

    pcfg = PreprocessConfig(size=cfg.size, resize=cfg.resize)
    train_ds = CXRDataset(train_samples, cfg.classes, pcfg, augment=cfg.augment)
    val_ds = CXRDataset(val_samples, cfg.classes, pcfg, augment=False)
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    if cfg.balanced:
        counts = np.bincount(train_ds.targets, minlength=len(cfg.classes)).astype(float)
        w = [1.0 / counts[t] for t in train_ds.targets]
        sampler = WeightedRandomSampler(w, num_samples=math.ceil(len(w) / world), replacement=True, generator=gen)
    elif distributed:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    else:
        sampler = None
    train_dl = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, shuffle=sampler is None,
                          generator=gen if sampler is None else None, num_workers=cfg.workers, drop_last=len(train_ds) > cfg.batch_size)
    val_dl = DataLoader(val_ds, batch_size=cfg.batch_size * 2, num_workers=cfg.workers)

    model = build_model(cfg.arch, num_classes=len(cfg.classes), weights=cfg.weights).to(device)
    cpu_bf16 = (not use_cuda) and cfg.amp and (cpu_has_bf16() if cfg.bf16 is None else cfg.bf16)
    channels_last = use_cuda or cpu_bf16
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None) if distributed else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_dl))
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, round(cfg.warmup_epochs * steps_per_epoch))))
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda and cfg.amp)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    val_sources = [s.source for s in val_samples]

    start_epoch, best, history = 0, -1.0, []
    last = out / "last.pt"
    if resume and last.is_file():
        st = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        start_epoch, best, history = st["epoch"] + 1, st["best"], st["history"]
        if ema is not None and "ema" in st:
            ema.load_state_dict(st["ema"])

    meta_base = {
        "edgecxr_version": __version__, "arch": cfg.arch, "classes": cfg.classes,
        "preprocess": pcfg.to_dict(), "train_config": asdict(cfg), "data": data_info or {},
    }
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    steps_done = start_epoch * steps_per_epoch
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(), disable=not (progress and main)) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            # every epoch's randomness derives from (seed, epoch, rank): a resumed run repeats it exactly
            _seed_all(cfg.seed * 7919 + epoch * 104729 + rank)
            gen.manual_seed(cfg.seed * 7919 + epoch * 104729 + 1000 + rank)
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            net.train()
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            for x, y in train_dl:
                x, y = x.to(device, non_blocking=True), y.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                amp_dtype = torch.float16 if use_cuda else torch.bfloat16
                with torch.autocast(device.type, dtype=amp_dtype, enabled=(use_cuda and cfg.amp) or cpu_bf16):
                    loss = loss_fn(net(x), y.long())
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update_parameters(model)
                seen += len(y)
                loss_sum += float(loss.detach()) * len(y)
                steps_done += 1
                bar.update(task, advance=1, info=f"loss {loss_sum / seen:.3f}")
                if cfg.max_steps and steps_done >= cfg.max_steps:
                    break
            train_time = time.perf_counter() - t0
            eval_model = ema.module if ema is not None else model
            probs, ys = predict_probs(eval_model, val_dl, device)
            vm = point_metrics(ys, probs, cfg.classes)
            score = selection_score(cfg.select, vm, ys, probs, cfg.classes, val_sources)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_images_per_s": seen * world / train_time,
                   "val_accuracy": vm["accuracy"], "val_macro_f1": vm["macro_f1"], "val_macro_auc": vm["macro_auc"],
                   "val_score": score, "lr": sched.get_last_lr()[0]}
            for src, r in per_source(ys, probs, cfg.classes, val_sources).items():
                for cname, sv in r["sensitivity"].items():
                    row[f"val_sens_{cname}_{src}"] = sv["value"]
            history.append(row)
            bar.update(task, info=f"loss {row['train_loss']:.3f} val acc {vm['accuracy']:.3f} f1 {vm['macro_f1']:.3f}")
            if main and progress:
                bar.console.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, {row['train_images_per_s']:.1f} img/s, "
                                  f"val acc {vm['accuracy']:.4f}, val macro F1 {vm['macro_f1']:.4f}")
            if main:
                if score > best:
                    best = score
                    save_checkpoint(eval_model.state_dict(), dict(meta_base, epoch=epoch + 1, val=vm, val_score=score),
                                    out / "best.safetensors")
                state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "scaler": scaler.state_dict(), "epoch": epoch, "best": best, "history": history, "meta": meta_base}
                if ema is not None:
                    state["ema"] = ema.state_dict()
                _atomic_torch_save(state, last)
                atomic_write_json(out / "metrics.json", history)
                with open(out / "metrics.csv", "w", newline="") as fh:
                    keys = list(dict.fromkeys(k for h in history for k in h))
                    w = csv.DictWriter(fh, fieldnames=keys, restval="")
                    w.writeheader()
                    w.writerows(history)
            if cfg.max_steps and steps_done >= cfg.max_steps:
                break
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return {"best_val_score": best, "best_val_macro_f1": max((h["val_macro_f1"] for h in history), default=best), "epochs": len(history), "history": history, "out": str(out)}

