import subprocess
import sys
from pathlib import Path

import pytest

from lightning_proxy.threads import apply_thread_policy

# The project's thread policy (one thread per process unless LIGHTNING_PROXY_THREADS says otherwise), for this
# process and every one the tests start (DDP ranks, sweep workers, the notebook kernel inherit it).
apply_thread_policy()

sys.path.insert(0, str(Path(__file__).parent))  # tests import the fake-data writers as `fakedata`


@pytest.fixture(scope="session")
def ddp_fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-process DDP fits of ``scripts/ddp_fits.py``, launched once for every test that reads them."""
    out = tmp_path_factory.mktemp("ddp_fits")
    script = Path(__file__).parent / "scripts" / "ddp_fits.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, timeout=900)
    return out


@pytest.fixture(scope="session")
def postgres():
    """The tests' own PostgreSQL server (see ``postgres.py``), started once and stopped by its pid."""
    from postgres import Server, binaries

    found = binaries()
    if found is None:
        pytest.skip("no PostgreSQL server binaries (set LIGHTNING_PROXY_PG_BIN); .ci/run installs them")
    server = Server(found)
    yield server
    server.close()
