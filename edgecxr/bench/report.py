"""Bench reports: a rich table, JSON / CSV / Markdown files, a latency-vs-accuracy plot, and compare."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.table import Table

from edgecxr.artifact import atomic_write_json

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
             "backend": r.get("backend", ""), "precision": r.get("precision", "")}
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
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("p50_ms")]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    machines = sorted({r["machine"] for r in ok})
    markers = "osD^v<>"
    for i, m in enumerate(machines):
        pts = [r for r in ok if r["machine"] == m]
        for verified in (True, False):
            sel = [r for r in pts if (r["status"] == "ok") == verified]
            if sel:
                ax.scatter([r["p50_ms"] for r in sel], [100 * r["accuracy"] for r in sel], marker=markers[i % len(markers)],
                           s=40, facecolors=None if verified else "none", edgecolors="C%d" % i, color="C%d" % i,
                           label=(m if len(machines) > 1 else "verified") if verified else "unverified")
        for r in pts:
            ax.annotate(r["target"], (r["p50_ms"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 3 + 6 * (len(ax.texts) % 2)),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("latency at batch 1, p50 (ms, log scale)")
    ax.set_ylabel("accuracy on the labelled set (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
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
    info = (f"Machine: {machine_label(run)}; ISA {', '.join(run['machine']['cpu']['isa'])}; checkpoint "
            f"{run['checkpoint']['arch']} sha256 {run['checkpoint']['sha256'][:12]}; {run['data']['images']} labelled images; "
            f"batch-1 latency over >= {cfg['iters']} runs after {cfg['warmup']} warm-up; throughput at batch {cfg['batch']}; "
            f"throughput mode: the engine's own (OpenVINO THROUGHPUT hint, asynchronous batch-{cfg['batch']} requests, "
            "counted only where its outputs match the latency model's argmax), "
            "speed-up throughput = the row's best images/s over eager's batch images/s; paired = each round's speed-up "
            "over eager in that round, median over rounds (a slow host phase then hits both sides more often); "
            f"threads: {cfg['threads']}; each timing the median of {cfg.get('rounds', 1)} interleaved round(s); {run['created']}.")
    (out / "bench.md").write_text(markdown(rows, "edgecxr bench", info))
    plot(rows, out / "bench.png", f"edgecxr bench - {machine_label(run)}")
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
