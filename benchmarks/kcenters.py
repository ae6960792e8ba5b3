"""Greedy k-centers: ``greedy_k_centers`` against the usual (selected + budget) x N distance-matrix baseline.

Both run on the same inputs (random clustered data regenerated from the seed), each in a fresh subprocess of
this script, so the peak memory of each is measured on its own: on CPU the peak resident memory
(``getrusage`` max RSS, with the high-water mark reset after the inputs are made) minus the resident memory
before the call; on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated before the call. The
baseline is the SVP / DeepCore structure: a ``(selected + budget) x N`` float32 matrix, one row of distances
appended per new center, a running minimum over the rows, argmax. It computes each row with the same float32
distance formula as ``greedy_k_centers`` on that device (explicit ``((x - c) ** 2).sum(1)`` on CPU, the norm
expansion on CUDA) and the same chunk size, so the two selections must be identical: the script checks it.

    python benchmarks/kcenters.py                              # CPU: N=50,000, d=512, budget=5,000
    python benchmarks/kcenters.py --separation 1               # weakly clustered data: little to prune
    python benchmarks/kcenters.py --device cuda                # same size on the GPU
    python benchmarks/kcenters.py --device cuda --n 1281167 --budget 128117 --skip-baseline   # ImageNet
    python benchmarks/kcenters.py --device cuda --n 1281167 --budget 128117 --skip-baseline --dtype float16

On CUDA it also prints the memory-bandwidth bound of the dense method, ``budget * N * d * bytes / bandwidth``
(``--bandwidth-gbs``, default 3350 GB/s: H100 SXM HBM3).
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

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --- the baseline -------------------------------------------------------------------------------------------
def k_centers_reference(embeddings, budget: int, start=None, seed: int = 0, chunk_size: int | None = None):
    """Farthest-first keeping the ``(selected + budget) x N`` distance matrix (as SVP / DeepCore do).

    Same conventions as ``greedy_k_centers``: squared float32 distances, ties to the lowest index, with
    ``start=None`` a seeded random first point that is returned first, ``start`` indices never returned.
    """
    x = torch.from_numpy(embeddings) if isinstance(embeddings, np.ndarray) else embeddings
    n, d = x.shape
    if chunk_size is None:
        chunk_size = max(1, (64 * 2**20 if x.is_cuda else 2**20) // (4 * d))
        if x.is_cuda and x.dtype == torch.float32:
            chunk_size = n
    start = [] if start is None else [int(i) for i in start]
    first = None
    if not start:
        first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    rows = distance_rows(x, chunk_size)
    matrix = torch.full((len(start) + budget, n), -1.0, device=x.device)  # the (selected + budget) x N matrix
    for r, i in enumerate(start):
        rows(i, matrix[r])
    mins = matrix[: len(start)].amin(dim=0) if start else torch.full((n,), float("inf"), device=x.device)
    if start:
        mins[torch.tensor(start, device=x.device)] = float("-inf")
    order = []
    for k in range(budget):
        j = first if (k == 0 and first is not None) else int(torch.argmax(mins))
        order.append(j)
        row = matrix[len(start) + k]
        rows(j, row)
        torch.minimum(mins, row, out=mins)
        mins[j] = float("-inf")
    return torch.tensor(order, dtype=torch.int64)


def distance_rows(x: torch.Tensor, chunk: int):
    """``fill(j, out)``: squared distances from row ``j`` to every row, written into ``out`` chunk by chunk."""
    n, d = x.shape
    work = torch.empty(min(chunk, n), d, device=x.device)  # reused float32 rows: no allocation per chunk
    if x.is_cuda:  # the norm expansion, as greedy_k_centers does on CUDA
        sqnorm = torch.cat([torch.linalg.vecdot(r.float(), r.float()) for r in x.split(chunk)])

        def fill(j: int, out: torch.Tensor) -> None:
            c = x[j].float()
            for s in range(0, n, chunk):
                rows = x[s : s + chunk]
                rows = rows if rows.dtype == torch.float32 else work[: len(rows)].copy_(rows)
                dist = torch.addmv(sqnorm[s : s + chunk], rows, c, alpha=-2.0).add_(sqnorm[j]).clamp_min_(0.0)
                out[s : s + chunk] = dist

        return fill

    def fill(j: int, out: torch.Tensor) -> None:  # explicit ((x - c) ** 2).sum(1), as on CPU
        c = x[j].float()
        for s in range(0, n, chunk):
            rows = x[s : s + chunk]
            buf = work[: len(rows)]
            torch.sub(rows if rows.dtype == torch.float32 else buf.copy_(rows), c, out=buf)
            torch.sum(buf.pow_(2), dim=1, out=out[s : s + chunk])

    return fill


# --- inputs and measurement ---------------------------------------------------------------------------------
def make_inputs(args) -> torch.Tensor:
    """``n`` points around ``clusters`` Gaussian means (std ``separation``), unit within-cluster noise."""
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    means = torch.randn(args.clusters, args.d, generator=g, device=device) * args.separation
    x = torch.empty(args.n, args.d, dtype=DTYPES[args.dtype], device=device)
    step = 8192  # made chunk by chunk: no transient copy of the whole matrix
    for s in range(0, args.n, step):
        m = min(step, args.n - s)
        labels = torch.randint(args.clusters, (m,), generator=g, device=device)
        x[s : s + m] = means[labels] + torch.randn(m, args.d, generator=g, device=device)
    return x


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

    impl = greedy_k_centers if args.worker == "greedy_k_centers" else k_centers_reference
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x = make_inputs(args)
    impl(x[:256], 8, seed=args.seed, chunk_size=args.chunk_size)  # load kernels, thread pools
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
    order = impl(x, args.budget, seed=args.seed, chunk_size=args.chunk_size)
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak_after = rss_kib()
    result = {
        "seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss_extra_mib": (peak_after - (rss_before if was_reset else peak_before)) / 1024,
        "peak_rss_reset": was_reset,
    }
    if cuda:
        result["peak_cuda_extra_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    np.save(Path(args.result).with_suffix(".npy"), order.numpy())
    Path(args.result).write_text(json.dumps(result))


def by_design_mib(impl: str, args) -> float:
    """What each implementation allocates at its peak, counted from the code (the largest terms)."""
    n, d, budget, cuda = args.n, args.d, args.budget, args.device.startswith("cuda")
    chunk = args.chunk_size or max(1, (64 * 2**20 if cuda else 2**20) // (4 * d))
    if cuda and args.chunk_size is None:  # half precision: torch.mm with float32 output, no upcast copy
        chunk = n
    chunk = min(chunk, n)
    rows = chunk * d * 4 if not cuda else 0  # float32 working rows
    if impl == "baseline":
        total = budget * n * 4 + n * 4 + rows + (n * 4 if cuda else 0)
    elif cuda:  # squared norms, min distances, matrix-vector output, order
        total = 3 * n * 4 + rows + budget * 8
    else:  # shifted centers and their bookkeeping, 4 length-N arrays, working rows
        total = budget * (d * 4 + 8 + 4 + 8 + 4 + 8) + n * (4 + 4 + 4 + 1) + rows + chunk * 4
    return total / 2**20


def run_in_subprocess(impl: str, args, workdir: str) -> tuple[dict, np.ndarray]:
    result = os.path.join(workdir, f"{impl}.json")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--result", result]
    for key in ("n", "d", "budget", "seed", "clusters", "separation", "device", "dtype", "chunk_size", "threads"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    if args.threads is not None:  # before numpy/torch start their thread pools
        env.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
        env.update(MKL_NUM_THREADS=str(args.threads))
    subprocess.run(argv, check=True, env=env)
    return json.loads(Path(result).read_text()), np.load(os.path.join(workdir, f"{impl}.npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--budget", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument(
        "--separation", type=float, default=2.0, help="std of the cluster means (within-cluster std is 1)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (both); default: the library's")
    parser.add_argument("--threads", type=int, default=None, help="torch/BLAS threads (default: torch's default)")
    parser.add_argument("--skip-baseline", action="store_true", help="when the N x budget matrix cannot fit")
    parser.add_argument("--bandwidth-gbs", type=float, default=3350.0, help="memory bandwidth for the CUDA bound")
    parser.add_argument("--worker", choices=["greedy_k_centers", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    itemsize = torch.empty(0, dtype=DTYPES[args.dtype]).element_size()
    print(
        f"N={args.n:,} d={args.d} budget={args.budget:,} {args.dtype} on {args.device}, {args.clusters} clusters "
        f"(means std {args.separation}, noise std 1), seed {args.seed}, "
        f"threads {args.threads or torch.get_num_threads()}"
    )
    print(
        f"inputs: {args.n * args.d * itemsize / 2**20:,.0f} MiB; the baseline's matrix: "
        f"{args.budget * args.n * 4 / 2**20:,.0f} MiB"
    )
    if args.device.startswith("cuda"):
        bound = args.budget * args.n * args.d * itemsize / (args.bandwidth_gbs * 1e9)
        print(f"bandwidth bound (budget*N*d*{itemsize} B at {args.bandwidth_gbs:g} GB/s): {bound:.1f} s")
    with tempfile.TemporaryDirectory() as workdir:
        impls = ["greedy_k_centers"] + ([] if args.skip_baseline else ["baseline"])
        results = {impl: run_in_subprocess(impl, args, workdir) for impl in impls}
    memory_key = "peak_cuda_extra_mib" if args.device.startswith("cuda") else "peak_rss_extra_mib"
    print(f"\n{'implementation':<18}{'seconds':>10}{'cpu s':>10}{'peak MiB':>11}{'by design MiB':>15}")
    for impl, (result, _) in results.items():
        print(
            f"{impl:<18}{result['seconds']:>10.2f}{result['cpu_seconds']:>10.2f}{result[memory_key]:>11.1f}"
            f"{by_design_mib(impl, args):>15.1f}"
        )
    print("(peak MiB: measured extra memory at the peak, over what was resident/allocated before the call)")
    if not args.skip_baseline:
        ours, base = results["greedy_k_centers"][0], results["baseline"][0]
        same = np.array_equal(results["greedy_k_centers"][1], results["baseline"][1])
        print(f"\nidentical selections: {'yes' if same else 'NO'} ({len(results['baseline'][1]):,} indices, in order)")
        print(f"time ratio (baseline / greedy_k_centers): {base['seconds'] / ours['seconds']:.1f}x")
        print(f"peak-memory ratio (baseline / greedy_k_centers): {base[memory_key] / max(ours[memory_key], 1e-9):.1f}x")
        if not same:
            sys.exit(1)
    if args.device.startswith("cuda"):
        print(f"greedy_k_centers at {bound / results['greedy_k_centers'][0]['seconds']:.0%} of the bandwidth bound")


if __name__ == "__main__":
    main()
