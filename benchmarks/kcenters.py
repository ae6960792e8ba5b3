"""Greedy k-centers on the CPU (or a GPU) against SVP's structure and a plain loop, idle or beside busy processes.

Three implementations on the same embeddings, each in a fresh subprocess of this script (so each one's peak
memory is its own: peak resident memory over what was resident before the call, or on CUDA
``max_memory_allocated`` over what was allocated):

- ``greedy_k_centers``: the project's;
- ``svp``: SVP's structure (``svp/common/selection/k_center_greedy.py``): a ``(start + budget) x pool``
  float32 matrix, one new row per center filled by ``scipy.spatial.distance.cdist`` (float64 Euclidean
  distances) over the columns not yet selected, a running minimum, argmax; single-threaded numpy/scipy;
- ``plain``: one torch pass per center over every row, ``((x - c) ** 2).sum(1)`` and a running minimum: the
  brute force, whose order the project's must match exactly.

Inputs: ``gaussian`` (N(0, I) in d dimensions: every point about equally far from every other, nothing to
prune) or ``clustered`` (``--clusters`` Gaussian means of std ``--separation`` with unit noise: classes), 10
start points (the labelled set) by default. ``--busy K`` runs K CPU-bound processes of the script's own for
the duration: a shared machine. Threads: each implementation runs with the process's defaults (torch's
pool of one thread per core) unless ``--threads``.

    python benchmarks/kcenters.py                                  # both data kinds, idle
    python benchmarks/kcenters.py --busy 2                         # beside two busy processes
    python benchmarks/kcenters.py --device cuda --n 1281167 --d 512 --budget 128117 --skip svp plain --dtype float16

On CUDA it also measures the card's read bandwidth (a sum over the embeddings) and prints the dense method's
bound, ``budget * N * d * bytes / bandwidth``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from busy import busy

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IMPLEMENTATIONS = ("greedy_k_centers", "svp", "plain")


# --- the two baselines --------------------------------------------------------------------------------------
def svp_structure(x: np.ndarray, start: np.ndarray, budget: int) -> np.ndarray:
    """Farthest-first as SVP's code is built: a (start + budget) x pool float32 matrix filled row by row by cdist."""
    from scipy.spatial.distance import cdist

    pool = np.setdiff1d(np.arange(len(x)), start)
    matrix = np.zeros((len(start) + budget, len(pool)), dtype=np.float32)
    matrix[: len(start)] = cdist(x[start], x[pool])
    nearest = matrix[: len(start)].min(axis=0)
    open_columns = np.ones(len(pool), dtype=bool)
    chosen = np.empty(budget, dtype=np.int64)
    for k in range(budget):
        j = int(np.argmax(nearest))
        chosen[k] = pool[j]
        nearest[j] = -1.0
        open_columns[j] = False
        row = len(start) + k
        matrix[row, open_columns] = cdist(x[pool[j] : pool[j] + 1], x[pool[open_columns]])[0]
        nearest = np.minimum(nearest, matrix[row])
    return chosen


def plain_loop(x: torch.Tensor, start: torch.Tensor, budget: int) -> torch.Tensor:
    """One pass over every row per center: the brute force (the same float32 formula as the project's exact one)."""
    mind = torch.full((x.shape[0],), float("inf"), device=x.device)
    for i in start.tolist():
        torch.minimum(mind, ((x - x[i].float()) ** 2).sum(1), out=mind)
    mind[start.to(x.device)] = float("-inf")
    chosen = torch.empty(budget, dtype=torch.int64, device=x.device)
    for k in range(budget):
        j = torch.argmax(mind)
        chosen[k] = j
        torch.minimum(mind, ((x - x[j].float()) ** 2).sum(1), out=mind)
        mind[j] = float("-inf")
    return chosen.cpu()


# --- inputs and measurement ---------------------------------------------------------------------------------
def make_inputs(args) -> tuple[torch.Tensor, torch.Tensor]:
    """The embeddings (``args.data``) and the start points, regenerated from the seed in every subprocess."""
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    x = torch.empty(args.n, args.d, dtype=DTYPES[args.dtype], device=device)
    means = torch.randn(args.clusters, args.d, generator=g, device=device) * args.separation
    step = 8192  # made chunk by chunk: no transient copy of the whole matrix
    for s in range(0, args.n, step):
        m = min(step, args.n - s)
        noise = torch.randn(m, args.d, generator=g, device=device)
        if args.data == "clustered":
            noise += means[torch.randint(args.clusters, (m,), generator=g, device=device)]
        x[s : s + m] = noise
    start = torch.randperm(args.n, generator=torch.Generator().manual_seed(args.seed))[: args.start]
    return x, start


def rss_kib() -> tuple[int, int]:
    """(current resident KiB, peak resident KiB since start or the last reset)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so a later allocation shows up as new resident memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM and ru_maxrss
        return True
    except OSError:
        return False


def worker(args) -> None:
    """Run one implementation on freshly made inputs; write its selection and measurements."""
    from lightning_proxy.selection.kcenters import greedy_k_centers

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x, start = make_inputs(args)
    if args.worker == "svp":
        xs = x.float().cpu().numpy()

        def impl(rows, b):
            return (
                svp_structure(xs[rows], np.arange(args.start), b)
                if rows is not None
                else svp_structure(xs, start.numpy(), b)
            )
    elif args.worker == "plain":

        def impl(rows, b):
            return plain_loop(x[rows], torch.arange(args.start), b) if rows is not None else plain_loop(x, start, b)
    else:

        def impl(rows, b):
            if rows is not None:
                return greedy_k_centers(x[rows], b, start=torch.arange(args.start))
            return greedy_k_centers(x, b, start=start)

    impl(slice(0, 256), 8)  # load kernels, thread pools
    cuda = x.is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    release_free_memory()
    rss_before, peak_before = rss_kib()
    was_reset = reset_peak_rss()
    if was_reset:
        rss_before, peak_before = rss_kib()
    wall, cpu = time.perf_counter(), time.process_time()
    order = impl(None, args.budget)
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak_after = rss_kib()
    result = {
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_extra_mib": (peak_after - (rss_before if was_reset else peak_before)) / 1024,
        "threads": torch.get_num_threads(),
    }
    if cuda:
        result["peak_cuda_extra_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
        result["bandwidth_gbs"] = read_bandwidth(x)
    np.save(Path(args.result).with_suffix(".npy"), np.asarray(order, dtype=np.int64))
    Path(args.result).write_text(json.dumps(result))


def read_bandwidth(x: torch.Tensor, repeats: int = 5) -> float:
    """The card's read bandwidth in GB/s, measured as the best of a few full sums over the embeddings."""
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        torch.sum(x, dtype=torch.float32)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return x.numel() * x.element_size() / best / 1e9


def run_in_subprocess(impl: str, args, workdir: str) -> tuple[dict, np.ndarray]:
    result = os.path.join(workdir, f"{impl}-{args.data}.json")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--result", result]
    for key in ("n", "d", "budget", "start", "seed", "clusters", "separation", "device", "dtype", "threads", "data"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(argv, check=True)
    return json.loads(Path(result).read_text()), np.load(Path(result).with_suffix(".npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--start", type=int, default=10, help="start points (the labelled set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=["gaussian", "clustered"], nargs="+", default=["gaussian", "clustered"])
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--separation", type=float, default=2.0, help="std of the cluster means (noise std 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--busy", type=int, default=0, metavar="K", help="run K CPU-bound processes meanwhile")
    parser.add_argument("--skip", nargs="*", choices=IMPLEMENTATIONS[1:], default=[], help="baselines to leave out")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.data = args.data[0] if isinstance(args.data, list) else args.data
        worker(args)
        return
    if args.device.startswith("cuda") and "svp" not in args.skip:
        args.skip.append("svp")  # numpy/scipy: CPU only
    impls = [i for i in IMPLEMENTATIONS if i not in args.skip]
    print(
        f"N={args.n:,} d={args.d} budget={args.budget:,} start={args.start} {args.dtype} on {args.device}, "
        f"seed {args.seed}, threads {args.threads or 'default'}, busy processes {args.busy}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as workdir, busy(args.busy):
        for data in args.data:
            args.data = data
            results = {impl: run_in_subprocess(impl, args, workdir) for impl in impls}
            rows.append((data, results))
    memory_key = "peak_cuda_extra_mib" if args.device.startswith("cuda") else "peak_rss_extra_mib"
    print("\n| data | implementation | seconds | cpu s | peak MiB | ours faster by | same order as brute force |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    failed = False
    for data, results in rows:
        ours, ours_order = results["greedy_k_centers"]
        for impl, (result, order) in results.items():
            ratio = result["seconds"] / ours["seconds"]
            if "plain" in results:
                same = np.array_equal(order, results["plain"][1])
                agree = "yes" if same else f"no (first {int(np.argmin(order == results['plain'][1]))} agree)"
                failed |= impl == "greedy_k_centers" and not same
            else:
                agree = "not run"
            print(
                f"| {data} | {impl} | {result['seconds']:.2f} | {result['cpu_seconds']:.2f} | "
                f"{result[memory_key]:.1f} | {ratio:.1f}x | {agree} |"
            )
        if args.device.startswith("cuda"):
            itemsize = torch.empty(0, dtype=DTYPES[args.dtype]).element_size()
            bandwidth = ours["bandwidth_gbs"]
            bound = args.budget * args.n * args.d * itemsize / (bandwidth * 1e9)
            print(f"{data}: read bandwidth {bandwidth:.0f} GB/s; bound {bound:.1f} s; at {bound / ours['seconds']:.0%}")
    print("(svp: cdist in float64 Euclidean distances, so near-ties may order differently from float32 brute force)")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
