"""Greedy k-centers (farthest-first traversal) that fits ImageNet-size pools in memory and time.

Greedy k-centers (Wolf 2011; the core-set of Sener & Savarese 2018) repeatedly adds the pool point that is
farthest from everything selected so far. The usual implementations (SVP, DeepCore) keep a
``(selected + budget) x N`` distance matrix: for ImageNet (N = 1,281,167, budget = 10%) that is 656 GB of
float32. Here only the running nearest-center distance of every point (a length-N vector) is kept, and the
distances from each new center are computed in bounded chunks, so the extra memory is O(N + chunk) (plus, on
CPU, a float32 copy of the selected rows: (start + budget) x d).

Speed:

- on CUDA each new center costs one pass over the embeddings (``||x||^2 - 2 x.c + ||c||^2``, a matrix-vector
  product: the memory-bandwidth bound) and nothing waits on the host: the argmax stays a device tensor and the
  order is copied to the CPU once at the end;
- on CPU, where a full pass per center is slow, the triangle inequality skips most points: every point remembers
  its nearest center ``a`` and distance ``m``, and a new center ``c`` can only come closer when
  ``d(c, a) < 2 m``. The distances from ``c`` to the existing centers (a matrix-vector product over
  ``selected x d``, not ``N x d``) decide which rows to read. The skip test has a safety margin larger than the
  float32 rounding error of the distances, so the pruned run picks exactly the same points, in the same order,
  as computing every distance. How many rows it skips depends on the data: clustered embeddings (classes)
  prune well; unstructured high-dimensional noise, where all points are about equally far apart, does not.
"""

from __future__ import annotations

import contextlib
import operator
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

__all__ = ["greedy_k_centers"]

CHUNK_BYTES = 64 * 2**20  # float32 working rows per chunk on an accelerator
CPU_CHUNK_BYTES = 2**20  # on CPU: cache-sized chunks are ~2x faster (and smaller) than 64 MiB ones
_ALLOWED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_UNIT_ROUNDOFF = 2.0**-24  # float32
_PLAIN_PASS_FRACTION = 0.5  # pruning that leaves more candidates than this is given up for a while ...
_PLAIN_PASS_CENTERS = 32  # ... for this many centers (all rows read), then tried again


def greedy_k_centers(
    embeddings: torch.Tensor | np.ndarray,
    budget: int,
    start: Any = None,
    seed: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Pick ``budget`` pool indices by farthest-first traversal in Euclidean distance.

    Each new center is the point whose distance to its nearest selected point is largest (ties: lowest index).
    Distances are computed in float32 (squared distances are compared), chunk by chunk on the embeddings'
    device; no ``(selected x N)`` matrix is ever built.

    Args:
        embeddings: ``(N, d)`` float32, float16 or bfloat16 tensor (CPU or CUDA), or a numpy array such as
            ``np.load("embeddings.npy", mmap_mode="r")``. Rows with NaN or inf (unscored examples) are refused.
        budget: number of points to return (a positive int, at most the number of points not in ``start``).
        start: indices already selected (the labelled set); they act as centers and are never returned. With
            ``None`` (or an empty ``start``) one start point is drawn at random (``torch.Generator`` seeded with
            ``seed``) and it IS returned: it is the first index of the result.
        seed: seed for the random start point (used only without ``start``).
        chunk_size: rows per chunk of the distance computation; default on CUDA: all rows in one pass (float32,
            or half precision through a float32-output matrix product; else 64 MiB of upcast rows), on CPU 1 MiB
            (cache-sized).

    Returns:
        The selected indices, a 1-D int64 CPU tensor of length ``budget``, in the order they were chosen.
    """
    x = _as_tensor(embeddings)
    n, d = x.shape
    budget = _check_budget(budget)
    start_idx = _check_start(start, n)
    available = n - (0 if start_idx is None else len(start_idx))
    if budget > available:
        where = "in the pool" if start_idx is None else f"outside start ({len(start_idx)} already selected)"
        raise ValueError(f"budget {budget} exceeds the {available} points available {where}")
    on_cpu = x.device.type == "cpu"
    half_direct = not on_cpu and x.dtype != torch.float32 and _mm_to_float32_works(x)
    if chunk_size is None:
        chunk_size = max(1, (CPU_CHUNK_BYTES if on_cpu else CHUNK_BYTES) // (4 * d))
        if not on_cpu and (x.dtype == torch.float32 or half_direct):
            chunk_size = n  # matrix-vector products need no float32 copy: one pass, fewest kernel launches
    else:
        chunk_size = operator.index(chunk_size)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    _check_finite(x, max(1, (CPU_CHUNK_BYTES if on_cpu else CHUNK_BYTES) // (4 * d)))
    first = None
    if start_idx is None:
        generator = torch.Generator().manual_seed(seed)
        first = int(torch.randint(n, (1,), generator=generator))
    if on_cpu:
        # Each center costs a few operations per 1 MiB chunk: on a pool of several threads each of them waits for
        # every thread, which on a machine whose cores are busy costs 5-20x (and numpy's BLAS spinning beside
        # torch's pool ~10x more); one thread for both keeps the CPU path fast whatever the load.
        with threadpool_limits(limits=1, user_api="blas"), _torch_threads(1):
            return _farthest_first_pruned(x, budget, start_idx, first, chunk_size)
    return _farthest_first_dense(x, budget, start_idx, first, chunk_size, half_direct)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- input checks -------------------------------------------------------------------------------------------
def _as_tensor(embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(embeddings, np.ndarray):
        if embeddings.dtype == np.float16 or embeddings.dtype == np.float32:
            with warnings.catch_warnings():  # read-only memory maps: never written to
                warnings.filterwarnings("ignore", message=".*not writable.*")
                embeddings = torch.from_numpy(embeddings)
        else:
            raise TypeError(f"embeddings must be float32 or float16, got numpy {embeddings.dtype} (use .astype)")
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"embeddings must be a torch tensor or a numpy array, got {type(embeddings).__name__}")
    if embeddings.dtype not in _ALLOWED_DTYPES:
        raise TypeError(f"embeddings must be float32, float16 or bfloat16, got {embeddings.dtype}")
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, d) matrix, got shape {tuple(embeddings.shape)}")
    embeddings = embeddings.detach()
    return embeddings if embeddings.stride(1) == 1 else embeddings.contiguous()


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool):
        raise ValueError(f"budget must be a positive int, got {budget!r}")
    try:
        budget = operator.index(budget)
    except TypeError:
        raise ValueError(f"budget must be a positive int, got {budget!r}") from None
    if budget < 1:
        raise ValueError(f"budget must be a positive int, got {budget}")
    return budget


def _check_start(start: Any, n: int) -> torch.Tensor | None:
    if start is None:
        return None
    idx = torch.as_tensor(np.asarray(start) if not isinstance(start, torch.Tensor) else start).reshape(-1)
    if idx.numel() == 0:
        return None
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise ValueError(f"start must hold integer indices, got {idx.dtype}")
    idx = idx.to("cpu", torch.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise ValueError(f"start has {len(bad)} index(es) out of range [0, {n}), e.g. {bad[:5].tolist()}")
    uniq, counts = torch.unique(idx, return_counts=True)
    if len(uniq) != len(idx):
        raise ValueError(f"start has duplicate indices, e.g. {uniq[counts > 1][:5].tolist()}")
    return idx


def _check_finite(x: torch.Tensor, chunk_size: int) -> None:
    """Refuse rows with NaN or inf (e.g. unscored rows of an ``embeddings.npy``); one pass, one sync."""
    n = x.shape[0]
    chunk_size = min(chunk_size, n)
    zeros = torch.empty(chunk_size, x.shape[1], device=x.device)  # reused: no allocation per chunk
    sums = torch.empty(n, device=x.device)
    for s in range(0, n, chunk_size):
        rows = x[s : s + chunk_size]
        buf = zeros[: len(rows)]
        torch.mul(buf.copy_(rows) if rows.dtype != torch.float32 else rows, 0.0, out=buf)  # NaN where not finite
        torch.sum(buf, dim=1, out=sums[s : s + chunk_size])
    bad = torch.isnan(sums)
    if bool(bad.any()):
        rows = torch.nonzero(bad).squeeze(1).cpu()
        raise ValueError(
            f"embeddings have {len(rows)} row(s) with NaN or inf (e.g. rows {rows[:10].tolist()}): unscored "
            "examples cannot be placed; select among the scored rows only (and map the indices back)"
        )


# --- CPU: farthest-first with triangle-inequality pruning ---------------------------------------------------
class _Workspace:
    """Preallocated float32 rows for the distance chunks (no allocation, hence no page faults, per center).

    A chunk's distances to a new center are screened first with one matrix-vector product (BLAS, one read of
    the rows): ``||x||^2 + ||c||^2 - 2 x.c`` less a bound on its float32 rounding is a lower bound on the
    true squared distance, and a row whose bound is not below its current minimum cannot come closer. Only
    the rows that may come closer (few, after the first centers) get the exact distance.
    """

    def __init__(self, rows: int, d: int, dtype: torch.dtype) -> None:
        self.f32 = torch.empty(rows, d)
        self.raw = None if dtype == torch.float32 else torch.empty(rows, d, dtype=dtype)
        self.out = torch.empty(rows)
        self.dots = np.empty(rows, dtype=np.float32)
        self.bound = np.empty(rows, dtype=np.float32)
        self.mask = np.empty(rows, dtype=bool)
        # |computed - true| <= gamma (||x||^2 + ||c||^2) for the norm expansion in float32 (the dot product,
        # the two norms and the sums; generous), and the exact formula's computed value is at least
        # (1 - (d + 2) u) times the true one: `shrink` covers that and the rounding of the bound itself.
        self.gamma = 2.0 * (2.0 * d + 16.0) * _UNIT_ROUNDOFF
        self.shrink = 1.0 - 8.0 * (d + 2) * _UNIT_ROUNDOFF

    def rows_f32(self, src: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``src[index]`` (all of ``src`` without ``index``) as float32 rows; valid until the next call."""
        m = src.shape[0] if index is None else len(index)
        if index is None:
            rows = src
        else:
            rows = torch.index_select(src, 0, index, out=self.f32[:m] if src.dtype == torch.float32 else self.raw[:m])
        return rows if rows.dtype == torch.float32 else self.f32[:m].copy_(rows)

    def may_come_closer(
        self, rows: torch.Tensor, sqnorm: np.ndarray, center: np.ndarray, c_sqnorm: float, mind: np.ndarray
    ) -> np.ndarray:
        """Positions (in ``rows``) whose true squared distance to ``center`` may be below ``mind``."""
        m = rows.shape[0]
        dots, bound, mask = self.dots[:m], self.bound[:m], self.mask[:m]
        np.matmul(rows.numpy(), center, out=dots)  # numpy's BLAS: IEEE float32 whatever torch's settings
        # lower bound = (||x||^2 + ||c||^2) (1 - gamma) - 2 x.c, shrunk
        np.add(sqnorm, c_sqnorm, out=bound)
        bound *= 1.0 - self.gamma
        bound -= dots
        bound -= dots
        bound *= self.shrink
        return np.flatnonzero(np.less(bound, mind, out=mask))

    def sq_dists(self, rows: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """``((rows - center) ** 2).sum(1)`` in float32; valid until the next call.

        The same formula, elementwise, as a dense ``((x[:, None] - x[None]) ** 2).sum(-1)``: each row's sum is
        reduced in the same order whatever the number of rows, so the values are bit-identical.
        """
        m = rows.shape[0]
        f32 = self.f32[:m]
        torch.sub(rows, center, out=f32)
        return torch.sum(f32.pow_(2), dim=1, out=self.out[:m])


def _farthest_first_pruned(
    x: torch.Tensor, budget: int, start: torch.Tensor | None, first: int | None, chunk: int
) -> torch.Tensor:
    n, d = x.shape
    n_start = 0 if start is None else len(start)
    n_centers = n_start + budget
    # Point i (nearest center a_i at computed squared distance m2_i) is skipped for a new center c when
    # lb2(c, a_i) >= 4 (1 + eps) m2_i, lb2 a guaranteed lower bound on the true squared distance d2(c, a_i).
    # Then d(c, x_i) >= d(c, a_i) - d(a_i, x_i) > ~ (1 + eps) d(a_i, x_i): the point cannot come closer.
    # Float32 rounding: a computed squared distance (a sum of nonnegative terms) is within a factor
    # (1 +- (d + 2) u) of the true one, and eps >= 2 (d + 2) u is enough for the computed distance of a
    # skipped point to c to stay >= its computed m2_i (so min() would have left it unchanged); we take
    # eps = 8 (d + 2) u (about 2.5e-4 for d = 512: it costs no pruning to speak of).
    shrink = 1.0 / (4.0 * (1.0 + 8.0 * (d + 2) * _UNIT_ROUNDOFF))
    # lb2 from a float32 matrix-vector product in numpy's BLAS (IEEE float32 whatever torch's matmul precision
    # settings): ||a||^2 + ||c||^2 - 2 a.c, on rows shifted by the first center to limit cancellation, minus
    # gamma (||a||^2 + ||c||^2), which bounds the rounding of the shift, the dot product and the norms.
    gamma = 2.0 * (2.0 * d + 16.0) * _UNIT_ROUNDOFF
    shifted = np.empty((n_centers, d), dtype=np.float32)  # centers minus the first center
    sqnorm = np.empty(n_centers, dtype=np.float64)  # their squared norms
    origin = np.empty(d, dtype=np.float32)
    work = _Workspace(min(chunk, n), d, x.dtype)
    sqnorm_rows = np.empty(n, dtype=np.float32)  # squared norms of the rows, for the screening bound
    for s in range(0, n, chunk):
        rows = work.rows_f32(x[s : s + chunk])
        torch.linalg.vecdot(rows, rows, out=torch.from_numpy(sqnorm_rows[s : s + chunk]))
    c_sqnorm = np.empty(1, dtype=np.float32)
    # The bookkeeping is O(N) per center and runs in numpy (less per-call overhead than torch on small ops),
    # in buffers allocated once: fresh memory means page faults, which can cost more than the arithmetic.
    mind = np.full(n, np.inf, dtype=np.float32)  # squared distance to the nearest center; -inf once selected
    assign = np.zeros(n, dtype=np.int32)  # row of the nearest center in `shifted`
    order = np.empty(budget, dtype=np.int64)
    dots = np.empty(n_centers, dtype=np.float32)
    bound = np.empty(n_centers, dtype=np.float64)
    threshold = np.empty(n_centers, dtype=np.float32)
    gathered = np.empty(n, dtype=np.float32)
    mask = np.empty(n, dtype=bool)
    block_starts = np.arange(0, n, chunk)
    block_sizes = np.minimum(chunk, n - block_starts)
    # When the bounds leave most rows as candidates (unstructured data, or the first few centers), computing
    # them costs more than it saves: then the next centers read every row, and pruning is tried again later.
    plain_until = 0

    def update(k: int, c: torch.Tensor, rows: slice | np.ndarray) -> None:
        """Distances from center ``k`` to ``rows`` (a slice: contiguous, no gather); keep the smaller."""
        index = np.arange(rows.start, min(rows.stop, n)) if isinstance(rows, slice) else rows
        src = work.rows_f32(x[rows]) if isinstance(rows, slice) else work.rows_f32(x, torch.from_numpy(rows))
        old = mind[index]
        maybe = work.may_come_closer(src, sqnorm_rows[index], c.numpy(), float(c_sqnorm[0]), old)
        if len(maybe) == 0:
            return
        exact = work.sq_dists(src[torch.from_numpy(maybe)], c).numpy()
        closer = exact < old[maybe]
        changed = index[maybe[closer]]
        assign[changed] = k
        mind[changed] = exact[closer]

    def add_center(k: int, j: int) -> None:
        nonlocal plain_until
        c = x[j].float()
        c_sqnorm[0] = sqnorm_rows[j]
        if k == 0:
            origin[:] = c.numpy()
        np.subtract(c.numpy(), origin, out=shifted[k])
        sqnorm[k] = shifted[k].astype(np.float64) @ shifted[k].astype(np.float64)
        if k < plain_until or k == 0:
            for s in range(0, n, chunk):
                update(k, c, slice(s, s + chunk))
        else:
            # lb2 = (|a|^2 + |c|^2) (1 - gamma) - 2 a.c for the k existing centers a, then the skip threshold
            np.matmul(shifted[:k], shifted[k], out=dots[:k])
            lb2 = bound[:k]
            np.add(sqnorm[:k], sqnorm[k], out=lb2)
            lb2 *= 1.0 - gamma
            lb2 -= dots[:k]
            lb2 -= dots[:k]
            lb2 *= shrink
            np.copyto(threshold[:k], lb2, casting="same_kind")
            # i may come closer only if mind[i] > threshold[assign[i]]
            np.take(threshold[:k], assign, out=gathered, mode="clip")  # "clip": no buffered copy
            candidates = np.flatnonzero(np.greater(mind, gathered, out=mask))
            if len(candidates) > _PLAIN_PASS_FRACTION * n:
                plain_until = k + _PLAIN_PASS_CENTERS
            # Gathering scattered rows costs several times a contiguous read: blocks with at least a quarter of
            # their rows as candidates are read whole (the others' distances cannot undercut their minimum).
            counts = np.diff(np.searchsorted(candidates, block_starts), append=len(candidates))
            dense = 4 * counts >= block_sizes
            for b in np.flatnonzero(dense):
                update(k, c, slice(int(block_starts[b]), int(block_starts[b] + block_sizes[b])))
            if dense.any():
                candidates = candidates[~np.repeat(dense, counts)]
            for s in range(0, len(candidates), chunk):
                update(k, c, candidates[s : s + chunk])
        mind[j] = -np.inf

    for k in range(n_start):
        add_center(k, int(start[k]))
    for k in range(budget):
        j = first if (k == 0 and first is not None) else int(mind.argmax())  # numpy: the first maximum
        order[k] = j
        add_center(n_start + k, j)
    return torch.from_numpy(order)


# --- CUDA: one matrix-vector pass per center, no host synchronisation ---------------------------------------
def _farthest_first_dense(
    x: torch.Tensor,
    budget: int,
    start: torch.Tensor | None,
    first: int | None,
    chunk: int,
    half_direct: bool = False,
) -> torch.Tensor:
    """Farthest-first with ``||x||^2 - 2 x.c + ||c||^2`` (any device; used on CUDA, tested on CPU).

    ``half_direct``: half-precision rows go straight into a matrix product with float32 output and
    accumulation (exact products, as for upcast rows), read at their own width with no float32 copy;
    otherwise (CPU, older torch) they are upcast chunk by chunk.
    """
    n, d = x.shape
    device = x.device
    sqnorm = torch.empty(n, device=device)
    norm_chunk = max(1, CHUNK_BYTES // (4 * d))  # vecdot makes an elementwise product: keep it to ~64 MiB
    for s in range(0, n, norm_chunk):
        rows = x[s : s + norm_chunk].float()
        torch.linalg.vecdot(rows, rows, out=sqnorm[s : s + norm_chunk])
    mind = torch.full((n,), float("inf"), device=device)
    if start is not None:
        _min_dist_to_set(x, sqnorm, start.to(device), mind, chunk)
        mind.index_fill_(0, start.to(device), float("-inf"))
    order = torch.empty(budget, dtype=torch.int64, device=device)
    first_index = None if first is None else torch.tensor([first], device=device)
    for k in range(budget):
        # the argmax stays on the device: no host synchronisation per center
        j = first_index if (k == 0 and first_index is not None) else torch.argmax(mind).view(1)
        order[k : k + 1].copy_(j)
        c_row = x.index_select(0, j).view(d, 1)
        c = c_row.float().view(d)
        c_sqnorm = sqnorm.index_select(0, j)
        for s in range(0, n, chunk):
            rows = x[s : s + chunk]
            if half_direct:
                dots = torch.mm(rows, c_row, out_dtype=torch.float32).view(-1)
                dist = torch.add(sqnorm[s : s + chunk], dots, alpha=-2.0)
            else:
                rows = rows if rows.dtype == torch.float32 else rows.float()
                dist = torch.addmv(sqnorm[s : s + chunk], rows, c, alpha=-2.0)
            dist = dist.add_(c_sqnorm).clamp_min_(0.0)
            torch.minimum(mind[s : s + chunk], dist, out=mind[s : s + chunk])
        mind.index_fill_(0, j, float("-inf"))
    return order.cpu()


def _mm_to_float32_works(x: torch.Tensor) -> bool:
    """Whether ``torch.mm(..., out_dtype=torch.float32)`` takes half-precision ``x`` on its device."""
    try:
        torch.mm(x[:1], x[:1].T, out_dtype=torch.float32)
    except (TypeError, RuntimeError, NotImplementedError):
        return False
    return True


def _min_dist_to_set(
    x: torch.Tensor, sqnorm: torch.Tensor, start: torch.Tensor, mind: torch.Tensor, chunk: int, block: int = 1024
) -> None:
    """``mind = min(mind, squared distance to the nearest start point)``, by float64 matrix products.

    Float64 keeps the norm expansion accurate and out of reach of TF32/bf16 float32-matmul settings.
    """
    n = x.shape[0]
    rows_per_chunk = max(1, min(chunk, CHUNK_BYTES // (8 * block)))
    for b in range(0, len(start), block):
        idx = start[b : b + block]
        centers = x.index_select(0, idx).double()
        c_sqnorm = sqnorm.index_select(0, idx).double()
        for s in range(0, n, rows_per_chunk):
            rows = x[s : s + rows_per_chunk].double()
            dist = torch.addmm(c_sqnorm.unsqueeze(0), rows, centers.T, alpha=-2.0)
            dist.add_(sqnorm[s : s + rows_per_chunk].double().unsqueeze(1))
            nearest = dist.amin(dim=1).clamp_min_(0.0).float()
            torch.minimum(mind[s : s + rows_per_chunk], nearest, out=mind[s : s + rows_per_chunk])
