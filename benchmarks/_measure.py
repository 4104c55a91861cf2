"""Measurement helpers shared by the benchmark scripts (memory, CPU time, fresh processes)."""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import resource


def rss_mb() -> float:
    """Current resident memory of this process in MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak() -> None:
    """Restart peak-memory tracking from the current resident memory (Linux clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_mb() -> float:
    """Peak resident memory of this process in MB since the last :func:`reset_peak`."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def in_fresh_process(target, *args):
    """Run ``target(queue, *args)`` in a new process and return what it puts on the queue."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(queue, *args))
    process.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not process.is_alive():
                message = f"{target.__name__}{args} failed (see its traceback above)"
                raise RuntimeError(message) from None
    process.join()
    return result
