"""One line describing the machine a benchmark ran on (imported by the bench scripts,
which run as `python bench/NAME.py`, so this folder is on the import path)."""

from __future__ import annotations

import os
import platform
import sys


def describe() -> str:
    """CPU model, cores, OS, Python, and the versions of numpy / TensorFlow if loaded."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    parts = [
        model,
        f"{os.cpu_count()} logical cores ({usable} usable)",
        f"{platform.system()} {platform.machine()}",
        f"Python {platform.python_version()}",
    ]
    for name in ("numpy", "tensorflow"):
        module = sys.modules.get(name)
        if module is not None:
            parts.append(f"{name} {module.__version__}")
    if "tensorflow" in sys.modules:
        gpus = sys.modules["tensorflow"].config.list_physical_devices("GPU")
        parts.append(f"{len(gpus)} GPU(s)")
    return "; ".join(parts)
