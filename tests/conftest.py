import os
import subprocess
import sys
from pathlib import Path

import pytest

# One thread per process, for this process and every one the tests start (DDP ranks, sweep workers, the
# notebook kernel inherit it): the tests' models are small, and beside other processes on a small CPU each
# of their many small operations would wait for every thread of a larger pool. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests import the fake-data writers as `fakedata`


@pytest.fixture(scope="session")
def ddp_fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-process DDP fits of ``scripts/ddp_fits.py``, launched once for every test that reads them."""
    out = tmp_path_factory.mktemp("ddp_fits")
    script = Path(__file__).parent / "scripts" / "ddp_fits.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=900)
    return out
