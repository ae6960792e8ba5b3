"""The CPU thread policy: one torch and BLAS thread per process unless the user says otherwise.

The project's CPU work is many small operations (small models on small images, k-centers bookkeeping,
scoring passes, DDP ranks beside each other). Every operation of a multi-threaded pool waits for all of its
threads, so on a machine whose cores are not all free (a laptop, a shared node, DDP ranks, sweep workers) a
pool of two or more threads makes each operation wait for a busy core: measured on 2 cores beside two busy
processes, a preact ResNet20 epoch on digits takes 5x longer with 2 threads than with 1, while on the idle
machine 2 threads gain little (``benchmarks/cpu_threads.py`` prints the table). So one thread per process
is the default.

The policy is written into ``OMP_NUM_THREADS``, which every process started from this one inherits (DDP
ranks, sweep workers, loader workers) and which Lightning's own rule for DDP on CPU (``cores // processes``
threads per rank, applied only when ``OMP_NUM_THREADS`` is unset) respects. To choose otherwise:

- ``LIGHTNING_PROXY_THREADS=N``: N threads per process;
- ``LIGHTNING_PROXY_THREADS=auto``: leave torch's and Lightning's defaults alone;
- an ``OMP_NUM_THREADS`` set before the command starts is kept as it is.
"""

from __future__ import annotations

import os

ENV = "LIGHTNING_PROXY_THREADS"
DEFAULT_THREADS = 1


def policy_threads(environ: os._Environ | dict[str, str] | None = None) -> int | None:
    """Threads per process that the policy asks for, or None to leave the defaults; a ValueError if malformed."""
    environ = os.environ if environ is None else environ
    value = environ.get(ENV, "").strip()
    if value.lower() == "auto":
        return None
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"{ENV}={value!r} from the environment: give a positive number of threads, or 'auto'")
        return threads
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None  # the user's own choice, which torch has already read
    return DEFAULT_THREADS


def apply_thread_policy() -> int | None:
    """Apply :func:`policy_threads` to this process and, through the environment, to the ones it starts.

    Returns the threads set, or None when the defaults were left alone.
    """
    threads = policy_threads()
    if threads is None:
        return None
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")  # numpy's and scipy's BLAS
    return threads
