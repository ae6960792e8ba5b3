"""``--busy K`` for the benchmarks: K CPU-bound processes of their own, for as long as a measurement runs.

A small CPU shared with other jobs is where thread pools collapse (every small operation waits for every
thread); the benchmarks start their own load so that the busy figures are repeatable.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

SPIN = "while True: pass"


@contextlib.contextmanager
def busy(k: int) -> Iterator[None]:
    """Run ``k`` spinning Python processes while the block runs; they are stopped however it ends."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(k)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
