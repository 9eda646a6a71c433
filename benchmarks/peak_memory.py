"""Peak-memory helpers shared by the benchmarks (Linux /proc): read a status field, reset the peak, trim.

Usage (in a fresh process per measurement)::

    from peak_memory import reset_hwm, status, trim
    trim(); before = status("VmRSS"); reset_hwm()
    ...                                   # the work to measure
    peak_growth = status("VmHWM") - before
"""

import ctypes
import gc
from pathlib import Path


def status(field: str) -> int:
    """A field of /proc/self/status (e.g. VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where /proc/self/clear_refs is not writable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trim() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS reflects live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
