"""The glibc settings that keep freed buffers in the process (model/allocator.py)."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.allocator import MALLOC_ENV, keep_freed_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")

# Allocate, touch and free a 64 MB tensor 30 times; print the minor page faults of the last 10
# (glibc's heap settles after a few loops: the small blocks torch allocates between them).
FAULTS = """
import resource, sys
import torch
if sys.argv[1] == "keep":
    from model.allocator import keep_freed_memory
    assert keep_freed_memory()
for i in range(30):
    if i == 20:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    return int(done.stdout.split()[-1])


@glibc_only
def test_keep_freed_memory_is_taken_by_glibc_and_can_be_repeated():
    assert keep_freed_memory()
    assert keep_freed_memory()


@glibc_only
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    default, kept = minor_faults("default"), minor_faults("keep")
    pages = 64 * 2**20 // 4096
    assert default > 5 * pages  # each loop maps the buffer afresh
    assert kept < pages  # the settled heap serves it from pages already in the process


def test_the_image_sets_the_same_malloc_variables():
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    for name, value in MALLOC_ENV.items():
        assert re.search(rf"\b{name}={value}\b", dockerfile), name
