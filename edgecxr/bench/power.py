"""Power on Jetson: tegrastats (or the INA3221 rails in sysfs), sampled while the latency loop runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

# Orin: "VDD_IN 5123mW/5123mW"; Xavier/Nano: "POM_5V_IN 2345/2345" (mW)
_RAIL = re.compile(r"\b(VDD_IN|POM_5V_IN|VIN_SYS_5V0)\s+(\d+)(?:mW)?/(\d+)(?:mW)?")


def parse_tegrastats(line: str) -> float | None:
    """Board input power in watts from one tegrastats line (None when no input rail is found)."""
    rails = {name: int(now) for name, now, _ in _RAIL.findall(line)}
    for name in ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0"):  # total board input first
        if name in rails:
            return rails[name] / 1000.0
    return None


def read_ina3221(root: Path = Path("/sys/bus/i2c/drivers/ina3221")) -> float | None:
    """Sum of in_power*_input / curr*volt rails of the first INA3221 hwmon, in watts (None if absent)."""
    for hw in sorted(root.glob("*/hwmon/hwmon*")):
        total, found = 0.0, False
        for ch in (1, 2, 3):
            c, v = hw / f"curr{ch}_input", hw / f"in{ch}_input"
            if c.is_file() and v.is_file():
                total += int(c.read_text()) * int(v.read_text()) / 1e6  # mA * mV -> W
                found = True
        if found:
            return total
    return None


class PowerSampler:
    """Background sampling; ``samples`` are watts."""

    def __init__(self, source: str) -> None:
        self.source, self.samples = source, []
        self._stop = threading.Event()
        self._proc = None
        self._thread: threading.Thread | None = None

    @classmethod
    def create(cls) -> "PowerSampler | None":
        from edgecxr.hardware import is_jetson

        if not is_jetson():
            return None
        if shutil.which("tegrastats"):
            return cls("tegrastats")
        return cls("ina3221") if read_ina3221() is not None else None

    def start(self) -> None:
        self._stop.clear()
        if self.source == "tegrastats":
            self._proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read_proc, daemon=True)
        else:
            self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _read_proc(self) -> None:
        for line in self._proc.stdout:
            w = parse_tegrastats(line)
            if w is not None:
                self.samples.append(w)
            if self._stop.is_set():
                break

    def _poll(self) -> None:
        while not self._stop.is_set():
            w = read_ina3221()
            if w is not None:
                self.samples.append(w)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._proc:
            self._proc.terminate()
        if self._thread:
            self._thread.join(timeout=2)

    def mean_watts(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else float("nan")
