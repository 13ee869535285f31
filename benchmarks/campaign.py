"""Run many `benchmarks/train_models.sh` jobs at once on one machine (a GPU box), inside a fixed time budget.

Jobs run in priority order (the order given), ``--parallel`` at a time, each in its own process group. Every few
seconds the scheduler projects each running job's finish from its recent epoch times; when a job would miss the
deadline it pauses (SIGSTOP) the lowest-priority running job so the others go faster, resumes it when there is slack,
and starts a queued job only when a full run still fits. At the deadline whatever is left is stopped and reported as
unfinished (its ``last.pt`` resumes it). Finished runs are collected as ``benchmarks/collect_runs.py`` does: config,
metrics CSV, curves and both evaluations into ``--collect`` (default ``benchmarks/results/training``).

    python benchmarks/campaign.py --deadline 420 --parallel 8 --workers 1 \\
        research:covid-densenet:4 research:densenet121:4 shipped:covid-densenet:4 \\
        research:covid-densenet:1:BALANCED=0,TAG=-e60-unbal --env EPOCHS=60 TAG=-e60

A job is CONFIG:ARCH:SEED[:VAR=VALUE,...] with train_models.sh's variables (EPOCHS, TAG, AUG, MIXUP, BALANCED, ...);
``--env`` sets them for every job (a job's own win).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect_runs import collect_run  # noqa: E402


@dataclass
class Job:
    config: str
    arch: str
    seed: int
    env: dict[str, str]
    priority: int
    state: str = "queued"  # queued | running | paused | done | failed | unfinished
    proc: subprocess.Popen | None = None
    active: float = 0.0  # seconds spent running (not paused)
    last_tick: float = 0.0
    epoch_times: list[float] = field(default_factory=list)  # active time at which each epoch was seen done
    rc: int | None = None

    @property
    def name(self) -> str:
        return f"{self.config}-{self.arch}{self.env.get('TAG', '')}-s{self.seed}"

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.name

    @property
    def epochs(self) -> int:
        return int(self.env.get("EPOCHS", "30"))

    def epochs_done(self) -> int:
        csv = self.run_dir / "metrics.csv"
        try:
            return max(0, len(csv.read_text().strip().splitlines()) - 1)
        except OSError:
            return 0


def parse_job(text: str, common: dict[str, str], priority: int) -> Job:
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[0] not in ("shipped", "research"):
        sys.exit(f"job {text!r}: write CONFIG:ARCH:SEED[:VAR=VALUE,...], CONFIG shipped or research.")
    env = dict(common)
    if len(parts) == 4 and parts[3]:
        for kv in parts[3].split(","):
            k, _, v = kv.partition("=")
            env[k] = v
    return Job(parts[0], parts[1], int(parts[2]), env, priority)


class Scheduler:
    def __init__(self, jobs: list[Job], parallel: int, deadline: float, eval_s: float, base_env: dict[str, str],
                 logs: Path, script: str = "benchmarks/train_models.sh", settle: float = 30.0):
        self.jobs, self.parallel, self.eval_s, self.base_env, self.logs = jobs, parallel, eval_s, base_env, logs
        self.script, self.settle = script, settle  # settle: seconds after a change before the next one
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline
        self.last_change = 0.0
        logs.mkdir(parents=True, exist_ok=True)

    def now(self) -> float:
        return time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{self.now() - self.t0:6.0f} s] {msg}", flush=True)

    def running(self) -> list[Job]:
        return [j for j in self.jobs if j.state == "running"]

    def start(self, job: Job) -> None:
        env = {**os.environ, **self.base_env, **job.env}
        fh = (self.logs / f"{job.name}.log").open("a")
        job.proc = subprocess.Popen(["bash", self.script, job.config, str(job.seed), job.arch],
                                    env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        job.state, job.last_tick = "running", self.now()
        self.last_change = self.now()
        self.log(f"start {job.name}")

    def signal(self, job: Job, sig: int) -> None:
        try:
            os.killpg(job.proc.pid, sig)
        except ProcessLookupError:
            pass

    def remaining(self, job: Job) -> float:
        """Projected seconds of running time left (training at its recent epoch rate, then the evaluations)."""
        done = len(job.epoch_times)
        if done < 2:
            return float("inf") if done == 0 else job.epoch_times[0] * job.epochs + self.eval_s
        recent = job.epoch_times[-4:]
        per_epoch = (recent[-1] - recent[0]) / (len(recent) - 1)
        return max(0, job.epochs - done) * per_epoch + (self.eval_s if done < job.epochs else 0)

    def full_run_estimate(self) -> float:
        walls = [j.active for j in self.jobs if j.state == "done"]
        if walls:
            return statistics.median(walls)
        est = [j.active + self.remaining(j) for j in self.running() if len(j.epoch_times) >= 2]
        return max(est) if est else float("inf")

    def tick(self) -> None:
        now = self.now()
        for j in self.jobs:
            if j.state == "running":
                j.active += now - j.last_tick
                j.last_tick = now
                while len(j.epoch_times) < min(j.epochs_done(), j.epochs):
                    j.epoch_times.append(j.active)
                if j.proc.poll() is not None:
                    j.rc = j.proc.returncode
                    j.state = "done" if j.rc == 0 else "failed"
                    self.last_change = now
                    self.log(f"{j.state} {j.name} (rc {j.rc}, {j.active:.0f} s running)")
            elif j.state == "paused":
                j.last_tick = now
        left = self.deadline - now
        run = self.running()
        settled = now - self.last_change > self.settle
        known = [j for j in run if len(j.epoch_times) >= 2]  # a rate needs two epochs
        late = [j for j in known if self.remaining(j) > left]
        if late and len(run) > 1 and settled:
            victim = max(run, key=lambda j: j.priority)
            self.signal(victim, signal.SIGSTOP)
            victim.state, self.last_change = "paused", now
            self.log(f"pause {victim.name}: {late[0].name} projects {self.remaining(late[0]):.0f} s, {left:.0f} s left")
            return
        if len(run) >= self.parallel or not settled and run:
            return
        slack = len(known) == len(run) and all(self.remaining(j) < left - 60 for j in run)
        paused = sorted((j for j in self.jobs if j.state == "paused"), key=lambda j: j.priority)
        if paused and slack:
            j = paused[0]
            if self.remaining(j) < left - 30:
                self.signal(j, signal.SIGCONT)
                j.state, self.last_change = "running", now
                self.log(f"resume {j.name}")
            return
        queued = [j for j in self.jobs if j.state == "queued"]
        est = self.full_run_estimate()  # inf until a job has a rate or has finished
        if queued and slack and (est < left * 0.95 or est == float("inf") and not run):
            self.start(queued[0])

    def run(self, poll: float = 5.0) -> None:
        for j in self.jobs[: self.parallel]:  # first wave at once
            self.start(j)
        while self.now() < self.deadline and any(j.state in ("running", "paused", "queued") for j in self.jobs):
            if not any(j.state in ("running", "paused") for j in self.jobs) and not self.full_run_estimate() < self.deadline - self.now():
                break
            time.sleep(poll)
            self.tick()
        for j in self.jobs:
            if j.state in ("running", "paused"):
                self.signal(j, signal.SIGCONT)
                self.signal(j, signal.SIGTERM)
                j.state = "unfinished"
        time.sleep(3)
        for j in self.jobs:
            if j.state == "unfinished":
                self.signal(j, signal.SIGKILL)
                self.log(f"unfinished {j.name}: stopped at epoch {j.epochs_done()}/{j.epochs} (resume from last.pt)")


def collect(job: Job, dest: Path) -> None:
    collect_run(job.run_dir, dest, job.name)


def summary(jobs: list[Job], hardware: str) -> str:
    lines = [f"Campaign on {hardware}", "",
             "| run | state | epochs | running s | best val score (epoch) | dev test accuracy |", "|---|---|---|---|---|---|"]
    for j in jobs:
        best, test = "", ""
        try:
            b = json.loads((j.run_dir / "best.json").read_text())
            best = f"{b['val_score']:.3f} ({b['epoch']})"
        except (OSError, KeyError, ValueError):
            pass
        try:
            t = json.loads((j.run_dir / "eval-test" / "eval.json").read_text())["image"]
            test = f"{100 * t['accuracy']:.1f}% of {t['n']}"
        except (OSError, KeyError, ValueError):
            pass
        lines.append(f"| {j.name} | {j.state} | {j.epochs_done()}/{j.epochs} | {j.active:.0f} | {best} | {test} |")
    return "\n".join(lines) + "\n"


def hardware_line() -> str:
    """GPUs (nvidia-smi) and the host CPU with its ISA (edgecxr.hardware; torch-free): stated beside every timing."""
    from edgecxr.hardware import cpu_info, gpu_info

    cpu = cpu_info()
    gpus = ", ".join(g["name"] for g in gpu_info()) or "no GPU"
    return f"{gpus}; host {cpu['model']}, {cpu['logical_cores']} cores, ISA {', '.join(cpu['isa'])}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jobs", nargs="+", help="CONFIG:ARCH:SEED[:VAR=VALUE,...], highest priority first")
    ap.add_argument("--env", nargs="*", default=[], help="VAR=VALUE for every job (EPOCHS=60 TAG=-e60 ...)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="data-loader processes per job")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per training process")
    ap.add_argument("--eval-threads", type=int, default=2, help="CPU threads of each job's evaluations")
    ap.add_argument("--deadline", type=float, default=3600, help="seconds from now; unfinished jobs are stopped")
    ap.add_argument("--eval-s", type=float, default=60, help="allowance for a job's two evaluations, seconds")
    ap.add_argument("--data", default=None, help="MANIFEST.csv (default: train_models.sh's)")
    ap.add_argument("--collect", type=Path, default=Path("benchmarks/results/training"))
    ap.add_argument("--logs", type=Path, default=Path("logs/campaign"))
    ap.add_argument("--script", default="benchmarks/train_models.sh", help="the job script (CONFIG SEED ARCH)")
    ap.add_argument("--poll", type=float, default=5.0, help="seconds between scheduler checks")
    a = ap.parse_args(argv)
    common = dict(kv.split("=", 1) for kv in a.env)
    jobs = [parse_job(t, common, i) for i, t in enumerate(a.jobs)]
    base = {"WORKERS": str(a.workers), "THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.eval_threads),
            "EDGECXR": f"{sys.executable} -m edgecxr.cli", "PYTHONUNBUFFERED": "1"}
    if a.data:
        base["DATA"] = a.data
    hw = hardware_line()
    print(f"{len(jobs)} jobs, {a.parallel} at a time, deadline {a.deadline:.0f} s; {hw}", flush=True)
    sched = Scheduler(jobs, a.parallel, a.deadline, a.eval_s, base, a.logs, a.script, settle=max(6 * a.poll, 1.0))
    sched.run(a.poll)
    for j in jobs:
        if j.state == "done":
            try:
                collect(j, a.collect)
            except OSError as exc:  # a job that exited 0 without its files: say so, keep the others
                j.state = f"done, not collected ({exc.__class__.__name__}: {exc.filename or exc})"
    text = summary(jobs, hw)
    a.logs.mkdir(parents=True, exist_ok=True)
    (a.logs / "summary.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
