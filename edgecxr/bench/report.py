"""Bench reports: a rich table, JSON / CSV / Markdown files, a latency-vs-accuracy plot, and compare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from edgecxr.artifact import atomic_write_json
from edgecxr.sidecar import REWRITES

CAVEAT = ("Accuracy is measured on the shipped dev-test subset, where class is confounded with hospital: "
          "it is not clinical validity. Small set: see the 95% intervals from `edgecxr eval`.")


def machine_label(run: dict) -> str:
    m = run["machine"]
    gpu = m["gpus"][0]["name"] if m.get("gpus") else None
    jet = (m.get("jetson") or {}).get("model")
    return jet or gpu or f"{m['cpu']['model']} ({m['cpu']['logical_cores']} cores)"


def flat_rows(run: dict) -> list[dict]:
    out = []
    for r in run["rows"]:
        f = {"machine": machine_label(run), "target": r["target"], "status": r["status"],
             "reason": "; ".join(x for x in (r.get("reason", ""), r.get("throughput_mode_note", "")) if x),
             "backend": r.get("backend", ""), "precision": r.get("precision", ""),
             "n_images": (run.get("data") or {}).get("images"),
             "float_nodes": ", ".join(r.get("float_nodes") or []) or None,
             "rewrites": ", ".join(REWRITES.get(k, k) for k in r.get("rewrites") or []) or None}
        if "latency_b1" in r:
            lat = r["latency_b1"]
            f.update({"p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"], "mean_ms": lat["mean_ms"],
                      "first_ms": r["first_inference_ms"], "batch": r["throughput"]["batch"],
                      "batch_ms_per_image": r["throughput"]["ms_per_image"], "images_per_s": r["throughput"]["images_per_s"],
                      "speedup_b1": r.get("speedup_b1"), "speedup_batch": r.get("speedup_batch"),
                      "tput_mode_images_per_s": (r.get("throughput_mode") or {}).get("images_per_s"),
                      "tput_mode_max_abs_diff": (r.get("throughput_mode") or {}).get("max_abs_diff_vs_latency"),
                      "speedup_throughput": r.get("speedup_throughput"),
                      "speedup_b1_paired": (r.get("speedup_paired") or {}).get("b1"),
                      "speedup_batch_paired": (r.get("speedup_paired") or {}).get("batch"),
                      "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "covid_sensitivity": r["covid_sensitivity"],
                      "macro_auc": r["macro_auc"], "agreement": r["agreement"], "peak_rss_mb": r["peak_rss_mb"],
                      "artifact_mb": r.get("artifact_mb"), "runs_precision": r["info"].get("inference_precision", r["info"].get("precision")),
                      "threads": r["info"].get("threads"), "engine_version": r["info"].get("version"),
                      "energy_mj_per_image": r.get("energy_mj_per_image")})
        out.append(f)
    return out


def _sort_key(f: dict):
    return (f["status"] != "ok", f.get("p50_ms") or 1e9)


def rich_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    cols = [("target", "target"), ("status", "status"), ("runs as", "runs_precision"), ("p50 ms", "p50_ms"),
            ("p99 ms", "p99_ms"), ("cold ms", "first_ms"), ("ms/img @b", "batch_ms_per_image"), ("x b1", "speedup_b1"),
            ("x batch", "speedup_batch"), ("x b1 paired", "speedup_b1_paired"), ("x tput", "speedup_throughput"), ("acc", "accuracy"), ("F1", "macro_f1"), ("COVID sens", "covid_sensitivity"),
            ("agree", "agreement"), ("RSS MB", "peak_rss_mb"), ("size MB", "artifact_mb")]
    multi = len({r["machine"] for r in rows}) > 1
    if multi:
        t.add_column("machine")
    for head, _ in cols:
        t.add_column(head, justify="right" if head not in ("target", "status", "runs as") else "left")
    for r in sorted(rows, key=_sort_key):
        cells = [r["machine"]] if multi else []
        for _, k in cols:
            v = r.get(k)
            if k == "status" and r["status"] != "ok":
                v = f"{r['status']}: {r['reason']}"[:60]
            cells.append("" if v is None else f"{v:.3f}" if k in ("accuracy", "macro_f1", "covid_sensitivity", "agreement")
                         else f"{v:.1f}" if isinstance(v, float) else str(v))
        t.add_row(*cells)
    return t


def markdown(rows: list[dict], title: str, run_info: str = "") -> str:
    head = ["target", "status", "runs as", "p50 ms (b1)", "p90", "p99", "cold ms", "ms/img (batch)", "speed-up b1",
            "speed-up batch", "paired b1 / batch", "img/s throughput mode", "speed-up throughput", "accuracy", "macro F1", "COVID sens.", "agreement", "peak RSS MB", "size MB"]
    keys = ["target", "status", "runs_precision", "p50_ms", "p90_ms", "p99_ms", "first_ms", "batch_ms_per_image",
            "speedup_b1", "speedup_batch", "paired", "tput_mode_images_per_s", "speedup_throughput", "accuracy", "macro_f1", "covid_sensitivity", "agreement", "peak_rss_mb",
            "artifact_mb"]
    multi = len({r["machine"] for r in rows}) > 1
    if multi:
        head, keys = ["machine"] + head, ["machine"] + keys
    lines = [f"## {title}", "", run_info, "", f"> {CAVEAT}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=_sort_key):
        cells = []
        for k in keys:
            v = r.get(k)
            if k == "status" and r["status"] != "ok":
                v = f"{r['status']}: {r['reason']}"
            if k == "paired":
                v = " / ".join(f"{r[x]:.2f}" for x in ("speedup_b1_paired", "speedup_batch_paired") if r.get(x) is not None)
            cells.append("" if v is None or v == "" else f"{v:.3f}" if k in ("accuracy", "macro_f1", "covid_sensitivity", "agreement")
                         else f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['target']}" + (f" ({r['machine']})" if multi else "") + ": "
             + "; ".join(x for x in (r.get("float_nodes") and f"kept float: {r['float_nodes']}",
                                     r.get("rewrites") and f"graph rewrites: {r['rewrites']}") if x)
             for r in sorted(rows, key=_sort_key) if r.get("float_nodes") or r.get("rewrites")]
    if notes:
        lines += ["", "What the artifacts run besides their precision (from their sidecars):", "", *notes]
    return "\n".join(lines) + "\n"


def _isa(run: dict) -> str:
    isa = ", ".join(run["machine"]["cpu"].get("isa") or []) or "ISA unknown"
    cap = run["machine"].get("onednn_cap")
    if cap:
        isa += (f" (OpenVINO and torch capped to {', '.join(cap['openvino_and_torch_isa']) or 'no AVX2'} kernels: "
                f"ONEDNN_MAX_CPU_ISA={cap['ONEDNN_MAX_CPU_ISA']})")
    return isa


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Two panels: latency per target (batch 1 and per image at the bench batch, speed-up over eager written on
    each bar) and accuracy with its 95% Wilson interval, so a one-image difference does not look like a finding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecxr.metrics import wilson_ci

    ok = sorted((r for r in rows if r.get("p50_ms")), key=lambda r: (r["machine"], -r["p50_ms"]))
    machines = sorted({r["machine"] for r in ok})
    multi = len(machines) > 1
    names = [(f"{r['target']} ({r['machine']})" if multi else r["target"]) + ("" if r["status"] == "ok" else "  [unverified]")
             for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.42 * max(len(ok), 2)), dpi=120,
                                   gridspec_kw={"width_ratios": [3, 2]}, sharey=True)
    y = list(range(len(ok)))
    h = 0.38
    labelled = {"b1": False, "batch": False}
    for i, r in enumerate(ok):
        colour = f"C{machines.index(r['machine'])}"
        hatch = None if r["status"] == "ok" else "//"
        ax1.barh(i + h / 2, r["p50_ms"], height=h, color=colour, alpha=0.9, hatch=hatch,
                 label=None if labelled["b1"] else "batch 1, p50")
        labelled["b1"] = True
        if r.get("batch_ms_per_image"):
            ax1.barh(i - h / 2, r["batch_ms_per_image"], height=h, color=colour, alpha=0.45, hatch=hatch,
                     label=None if labelled["batch"] else f"batch {r['batch']}, ms per image")
            labelled["batch"] = True
        sp = r.get("speedup_b1_paired") or r.get("speedup_b1")
        if sp:
            ax1.annotate(f"{sp:.1f}x", (r["p50_ms"], i + h / 2), xytext=(3, -3), textcoords="offset points", fontsize=7)
        n = r.get("n_images")
        if r.get("accuracy") is not None:
            acc = 100 * r["accuracy"]
            if n:
                lo, hi = wilson_ci(round(r["accuracy"] * n), n)
                ax2.errorbar(acc, i, xerr=[[acc - 100 * lo], [100 * hi - acc]], fmt="o", color=colour, capsize=3,
                             mfc=colour if r["status"] == "ok" else "white")
            else:
                ax2.plot(acc, i, "o", color=colour)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.set_xlabel("ms (lower is better); label: speed-up over torch eager at batch 1 (paired when measured)", fontsize=8)
    ax1.set_xlim(0, 1.12 * max((max(r["p50_ms"], r.get("batch_ms_per_image") or 0) for r in ok), default=1))
    ax1.legend(fontsize=7, loc="upper right")
    ax1.grid(True, axis="x", alpha=0.3)
    n_txt = f" of {ok[0]['n_images']} images" if ok and ok[0].get("n_images") else ""
    ax2.set_xlabel(f"accuracy{n_txt} (%), 95% Wilson interval", fontsize=8)
    ax2.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(run: dict, out: Path) -> list[dict]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = flat_rows(run)
    atomic_write_json(out / "bench.json", run)
    with open(out / "bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    cfg = run["config"]
    info = (f"Machine: {machine_label(run)}; ISA {_isa(run)}; checkpoint "
            f"{run['checkpoint']['arch']} sha256 {run['checkpoint']['sha256'][:12]}; {run['data']['images']} labelled images; "
            f"batch-1 latency over >= {cfg['iters']} runs after {cfg['warmup']} warm-up; throughput at batch {cfg['batch']}; "
            f"throughput mode: the engine's own (OpenVINO THROUGHPUT hint, asynchronous batch-{cfg['batch']} requests, "
            "counted only where its outputs match the latency model's argmax), "
            "speed-up throughput = the row's best images/s over eager's batch images/s; paired = each round's speed-up "
            "over eager in that round, median over rounds (a slow host phase then hits both sides more often); "
            f"threads: {cfg['threads']}; each timing the median of {cfg.get('rounds', 1)} interleaved round(s); {run['created']}.")
    (out / "bench.md").write_text(markdown(rows, "edgecxr bench", info))
    plot(rows, out / "bench.png", f"edgecxr bench - {machine_label(run)}; ISA {_isa(run)}; {cfg['threads'] or 'default'} threads")
    return rows


def compare(paths: list[Path], out: Path) -> list[dict]:
    rows = []
    for p in paths:
        rows += flat_rows(json.loads(Path(p).read_text()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(rows, "edgecxr bench compare", "Runs: " + ", ".join(map(str, paths))))
    plot(rows, out / "compare.png", "edgecxr bench compare")
    return rows
