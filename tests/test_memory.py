"""sgim_nodes.memory: freed large blocks stay mapped inside the block, and go back to the system after it.

Measured by minor page faults: touching a fresh 64 MB tensor costs one fault per 4 KB page (16384)
when its memory comes from the kernel, and none when it reuses memory already mapped. Each scenario
runs in a fresh interpreter, because glibc's heap remembers what earlier tests did (a hole left in
the heap is reused, resident, by a later allocation of that size).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgim_nodes import memory

PAGES = 64 * 1024 * 1024 // 4096  # a 64 MB tensor: above glibc's largest mmap threshold (32 MB)
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not memory.available(), reason="the allocator hint acts only on Linux with glibc")

PRELUDE = textwrap.dedent(f"""
    import json, resource, sys
    import torch
    sys.path.insert(0, {str(REPO)!r})
    from sgim_nodes import memory

    def fresh_tensor_faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones({PAGES * 1024}).sum()  # allocate, touch every page, free
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    def steady_state():
        # The first few allocations grow the heap: PyTorch asks for 64-byte aligned blocks, and glibc's
        # aligned allocation needs a slightly larger free block than the one the previous tensor left.
        for _ in range(5):
            fresh_tensor_faults()
        return fresh_tensor_faults()
""")


def run(scenario: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(scenario)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_inside_the_block_and_released_after():
    result = run("""
        outside = steady_state()
        with memory.reuse_freed_memory():
            inside = steady_state()
        after = fresh_tensor_faults()
        print(json.dumps(dict(outside=outside, inside=inside, after=after, depth=memory._depth)))
    """)
    assert result["outside"] > PAGES // 2  # by default every large tensor page-faults in again
    assert result["inside"] < PAGES // 20
    assert result["after"] > PAGES // 2  # malloc_trim gave the pages back
    assert result["depth"] == 0


def test_nested_blocks_restore_only_when_the_outer_one_exits():
    result = run("""
        with memory.reuse_freed_memory():
            with memory.reuse_freed_memory():
                steady_state()
            still_inside = steady_state()
        after = fresh_tensor_faults()
        print(json.dumps(dict(still_inside=still_inside, after=after, depth=memory._depth)))
    """)
    assert result["still_inside"] < PAGES // 20
    assert result["after"] > PAGES // 2
    assert result["depth"] == 0


def test_disabled_block_changes_nothing():
    result = run("""
        with memory.reuse_freed_memory(enabled=False):
            inside = steady_state()
        print(json.dumps(dict(inside=inside, depth=memory._depth)))
    """)
    assert result["inside"] > PAGES // 2
    assert result["depth"] == 0
