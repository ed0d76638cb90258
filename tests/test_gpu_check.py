"""benchmarks/gpu_check.sh on the CPU (tiny sizes): the GPU check is known to run before a GPU is there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_step_on_the_cpu_into_one_summary(tmp_path):
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--out", str(summary)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    text = summary.read_text()
    assert done.returncode == 0, text[-4000:]
    titles = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    for needed in ("device tests", "StyleGAN2 generator", "StyleGAN3 T and R", "optimiser", "projection and tuning",
                   "music video", "instant edit"):
        assert any(t.startswith(needed) for t in titles), (needed, titles)
    assert text.count("\nok in ") == len([t for t in titles if not t.startswith("instant edit")]) + \
        (1 if (REPO / "benchmarks" / "bench_instant.py").is_file() else 0)
    assert "4 passed, 2 skipped" in text  # the device tests ran on the CPU; autocast ones skip there
    assert "0 step(s) failed or timed out" in text
    assert "s/step" in text and "frames/s" in text  # the benchmarks' own tables are in the summary
