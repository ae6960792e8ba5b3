import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


def test_the_gpu_script_runs_every_check_in_smoke_mode(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    run = subprocess.run(["bash", str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = run.stdout.strip().splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith(("| check", "| ---"))]
    assert len(rows) == 5 and not any("FAILED" in r for r in rows)  # overhead, k-centers, data paths, fit, text
    assert "ratio" in rows[0] and "greedy_k_centers" in rows[1] and "digits" in rows[2]
    assert "ranking files: 7" in rows[3]
    assert "vdcnn29" in rows[4] and "fasttext" in rows[4]
    assert (tmp_path / "gpu_check.log").stat().st_size > 0
