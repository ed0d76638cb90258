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


PROBE = textwrap.dedent("""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def mmapped(size):
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(size)
        served_by_mmap = libc.mallinfo2().hblkhd - before >= size
        libc.free(block)
        return served_by_mmap

    def allocator_settings(size_mb):
        # glibc has no getter for its mallopt values, but their effect is observable. Untouched, glibc
        # serves a large block by mmap and, once it is freed, raises its mmap threshold to that size
        # (dynamic threshold, up to 32 MB): a slightly smaller block then comes from the heap. Any mallopt
        # of the thresholds switches that off for good. Each call uses a larger size than the last, above
        # anything the work in between frees, so earlier calls do not decide later ones.
        size = size_mb << 20
        return {"mmapped": mmapped(size), "threshold_follows_frees": not mmapped(size - (1 << 20))}

""")


def test_an_optimiser_run_as_the_nodes_make_it_leaves_the_allocator_settings_as_they_were():
    """Inside ComfyUI the nodes run the optimiser with reuse_cpu_memory=False: glibc's process-wide
    settings after the run equal those before. The hint itself cannot restore them (glibc has no getter,
    and any mallopt call switches its dynamic threshold off for good), which is why it stays off there."""
    result = run(PROBE + textwrap.dedent("""
        from sgim_nodes.clip import ClipModel, build_tiny_clip
        from sgim_nodes.optimize import optimize_latent
        from sgim_nodes.stylegan import Generator, GeneratorConfig

        before = allocator_settings(28)
        torch.manual_seed(0)
        generator = Generator(GeneratorConfig(resolution=16, z_dim=32, w_dim=32, n_mapping=2,
                                              channels={4: 16, 8: 16, 16: 16}))
        clip = ClipModel(build_tiny_clip(), "tiny", tokenizer=None)
        target = torch.nn.functional.normalize(torch.randn(1, 32), dim=-1)
        optimize_latent(generator, clip, target, source_ws="random", steps=2, reuse_cpu_memory=False)
        after_node_run = allocator_settings(30)
        with memory.reuse_freed_memory():
            pass
        after_hint = allocator_settings(31)
        print(json.dumps(dict(before=before, after_node_run=after_node_run, after_hint=after_hint)))
    """))
    assert result["before"] == {"mmapped": True, "threshold_follows_frees": True}
    assert result["after_node_run"] == result["before"]
    assert result["after_hint"] != result["before"]  # the probe sees the hint's change (fixed 32 MB threshold)
