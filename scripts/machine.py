"""The machine a run or benchmark was recorded on, for the records of scripts/ and tools/benchmarks/."""

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux), else platform's guess: runs on "2 cores" differ several-fold by CPU."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_description(*details: str) -> str:
    """The machine a benchmark ran on: architecture, CPU count and model, then `details` (threads, load)."""
    return ", ".join([f"{platform.machine()} {os.cpu_count()} cpus", cpu_model(), *details])
