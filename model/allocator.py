"""An allocator that keeps its buffers: glibc malloc settings for CPU inference (issue 14).

By default glibc serves every block over its mmap threshold (128 kB, growing to 32 MB) with a
fresh ``mmap`` and gives it back on ``free``, and trims the top of the heap: a forward pass of
the denoiser then faults its activation buffers in again at every call. Measured at one
thread, 10 members, 20 steps, 128 x 128: 0.5-0.8 million minor faults and 0.9-1.5 s of system
time per small-preset forecast, under 13 k faults and 0.07 s with these settings. For the
paper preset at two threads (10 members): 10.5 million faults and 22 s of system time per
forecast with a trim threshold of 2 GiB (the largest ``mallopt`` takes as a number, below its
heap), 0.2 million and 0.8 s with trimming off. The cost is memory: the process keeps its peak
heap (4.4 GB for that paper forecast).

:data:`MALLOC_ENV` holds the settings as environment variables, read by glibc when a process
starts (``make serve`` gives them to its workers, the Dockerfile to every process);
:func:`keep_freed_memory` applies the same settings to a running process through
``mallopt``, as the worker and ``nowcast bench`` do at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",  # never mmap: large blocks come from the heap and stay there
    "MALLOC_TRIM_THRESHOLD_": "68719476736",  # 64 GiB: never give the heap's top back
    "MALLOC_TOP_PAD_": "1073741824",  # grow the heap 1 GiB at a time
}

# mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_NEVER = -1  # mallopt(3): a trim threshold of -1 disables trimming (it takes an int: 2 GiB at most)


def keep_freed_memory() -> bool:
    """Apply :data:`MALLOC_ENV` to this process through glibc's ``mallopt``.

    Returns True when glibc took every setting; False (and nothing changes) on another C
    library, e.g. musl, or where ``mallopt`` refuses.
    """
    if platform.libc_ver()[0] != "glibc":
        log.info("not glibc: malloc settings left as they are")
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = (
        (_M_MMAP_MAX, int(MALLOC_ENV["MALLOC_MMAP_MAX_"])),
        (_M_TRIM_THRESHOLD, _NEVER),  # the paper preset's heap passes 2 GiB
        (_M_TOP_PAD, int(MALLOC_ENV["MALLOC_TOP_PAD_"])),
    )
    ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    if not ok:
        log.warning("glibc refused a malloc setting; freed buffers may go back to the OS")
    return ok
