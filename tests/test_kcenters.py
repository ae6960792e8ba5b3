"""greedy_k_centers against a brute-force farthest-first on a dense distance matrix: the same order, exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lightning_proxy.selection import kcenters
from lightning_proxy.selection.kcenters import greedy_k_centers


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are small: one intra-op thread is faster, and immune to a busy machine's scheduling."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brute_force(x, budget: int, start=None, seed: int = 0) -> list[int]:
    """Farthest-first on the full (N, N) matrix of float32 squared distances; ties to the lowest index."""
    x = torch.as_tensor(x).float()
    dist = torch.cat([((block[:, None, :] - x[None, :, :]) ** 2).sum(-1) for block in x.split(32)])  # (N, N)
    n = len(x)
    if start is None:
        selected = [int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))]
        order = list(selected)
    else:
        selected, order = [int(i) for i in start], []
    nearest = dist[selected].min(dim=0).values
    nearest[selected] = float("-inf")
    while len(order) < budget:
        j = int(torch.argmax(nearest))  # the first maximum
        order.append(j)
        nearest = torch.minimum(nearest, dist[j])
        nearest[j] = float("-inf")
    return order


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def clustered(n: int, d: int, clusters: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(clusters, d, generator=g) * spread
    return means[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, d, generator=g)


def count_rows(monkeypatch, method: str = "rows_f32") -> list[int]:
    """Record how many rows each read of the embeddings (or, ``sq_dists``, each exact distance) covers."""
    counts: list[int] = []
    original = getattr(kcenters._Workspace, method)

    def counting(self, src, *args):
        index = args[0] if method == "rows_f32" and args else None
        counts.append(len(src) if index is None else len(index))
        return original(self, src, *args)

    monkeypatch.setattr(kcenters._Workspace, method, counting)
    return counts


def test_screening_leaves_few_exact_distances_on_unstructured_data(monkeypatch):
    x = gaussian(2000, 32, seed=8)  # all points about equally far apart: the triangle bound prunes nothing
    expected = brute_force(x, 200)
    exact = count_rows(monkeypatch, "sq_dists")
    assert greedy_k_centers(x, 200, chunk_size=256).tolist() == expected
    # each center's exact distances go only to rows its bound cannot rule out: about its own Voronoi cell
    assert sum(exact) < 0.1 * 200 * 2000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_start_matches_brute_force(seed):
    x = gaussian(300, 32, seed)
    order = greedy_k_centers(x, 120, seed=seed)
    assert order.dtype == torch.int64 and order.device.type == "cpu" and order.shape == (120,)
    assert order.tolist() == brute_force(x, 120, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    assert order[0] == int(torch.randint(300, (1,), generator=generator))  # the random start is returned first


def test_start_set_matches_brute_force_and_is_excluded():
    x = gaussian(300, 24, 3)
    start = torch.randperm(300, generator=torch.Generator().manual_seed(3))[:40]
    order = greedy_k_centers(x, 100, start=start)
    assert order.tolist() == brute_force(x, 100, start=start.tolist())
    assert not set(order.tolist()) & set(start.tolist())
    assert greedy_k_centers(x, 100, start=start.numpy()).tolist() == order.tolist()  # numpy start
    assert greedy_k_centers(x, 100, start=start.tolist(), chunk_size=7).tolist() == order.tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_brute_force_on_upcast_values(dtype):
    x = (gaussian(300, 40, 4) * 3).to(dtype)
    assert greedy_k_centers(x, 150).tolist() == brute_force(x.float(), 150)
    start = [5, 17, 200]
    assert greedy_k_centers(x, 50, start=start).tolist() == brute_force(x.float(), 50, start=start)


def test_clustered_data_prunes_most_rows_with_identical_order(monkeypatch):
    x = clustered(1200, 16, clusters=20, spread=4.0, seed=5)
    expected = brute_force(x, 300)
    rows = count_rows(monkeypatch)
    assert greedy_k_centers(x, 300, chunk_size=64).tolist() == expected
    assert sum(rows) - 1200 < 0.15 * 300 * 1200  # the brute force reads 300 x 1200 rows (1200: the norms' pass)
    # ties everywhere: a small integer grid with duplicate points
    grid = torch.randint(0, 3, (300, 12), generator=torch.Generator().manual_seed(6)).float()
    grid = torch.cat([grid, grid[:60]])
    assert greedy_k_centers(grid, 355).tolist() == brute_force(grid, 355)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_low_dimensional_data_where_the_triangle_bound_is_tight(rank):
    """On a line the triangle inequality is nearly an equality: a skip test 1% too loose changes the order."""
    g = torch.Generator().manual_seed(rank)
    x = torch.rand(400, rank, generator=g) @ torch.randn(rank, 8, generator=g)
    assert greedy_k_centers(x, 200).tolist() == brute_force(x, 200)


def test_far_from_the_origin_and_small_chunks():
    x = 1000.0 + 0.01 * gaussian(250, 48, 7)  # cancellation-prone: tiny spread, huge offset
    assert greedy_k_centers(x, 150).tolist() == brute_force(x, 150)
    y = clustered(500, 20, clusters=8, spread=5.0, seed=8)
    assert greedy_k_centers(y, 200, chunk_size=5).tolist() == brute_force(y, 200)


def test_numpy_and_memmap_inputs(tmp_path):
    x = gaussian(200, 16, 9).numpy()
    expected = brute_force(x, 60)
    assert greedy_k_centers(x, 60).tolist() == expected
    path = tmp_path / "embeddings.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=x.shape)
    out[:] = x
    out.flush()
    del out
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch.from_numpy
        assert greedy_k_centers(np.load(path, mmap_mode="r"), 60).tolist() == expected


def test_nan_rows_are_refused(tmp_path):
    path = tmp_path / "embeddings.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(50, 8))
    out[:] = np.random.default_rng(0).standard_normal((50, 8))
    out[[7, 31]] = np.nan  # unscored examples
    out.flush()
    del out
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN.*\[7, 31\]"):
        greedy_k_centers(np.load(path, mmap_mode="r"), 5)
    x = torch.randn(20, 4)
    x[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"1 row\(s\) with NaN or inf.*\[3\]"):
        greedy_k_centers(x, 5)


def test_bad_inputs_are_refused():
    x = torch.randn(30, 4)
    with pytest.raises(ValueError, match="budget must be a positive int"):
        greedy_k_centers(x, 0)
    with pytest.raises(ValueError, match="budget must be a positive int"):
        greedy_k_centers(x, 2.5)
    with pytest.raises(ValueError, match="budget 31 exceeds the 30 points available"):
        greedy_k_centers(x, 31)
    with pytest.raises(ValueError, match=r"budget 28 exceeds the 27 points available outside start \(3"):
        greedy_k_centers(x, 28, start=[0, 1, 2])
    with pytest.raises(ValueError, match=r"start has 1 index\(es\) out of range \[0, 30\)"):
        greedy_k_centers(x, 3, start=[0, 30])
    with pytest.raises(ValueError, match="start has 1 index.*out of range"):
        greedy_k_centers(x, 3, start=[-1])
    with pytest.raises(ValueError, match=r"start has duplicate indices, e.g. \[4\]"):
        greedy_k_centers(x, 3, start=[4, 5, 4])
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        greedy_k_centers(x.double(), 3)
    with pytest.raises(ValueError, match="chunk_size must be a positive"):
        greedy_k_centers(x, 3, chunk_size=0)


def test_whole_pool_and_duplicates():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(10))
    x = torch.cat([x, x])  # every point twice
    order = greedy_k_centers(x, 80)
    assert sorted(order.tolist()) == list(range(80))
    assert order.tolist() == brute_force(x, 80)


def test_greedy_property():
    """Each new center is a farthest point, and the covering radius never grows as the selection grows."""
    x = clustered(150, 6, clusters=5, spread=3.0, seed=11)
    order = greedy_k_centers(x, 60).tolist()
    dist = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).sqrt()
    radii = []
    for k in range(1, len(order) + 1):
        nearest = dist[order[:k]].min(dim=0).values
        radii.append(float(nearest.max()))
        if k < len(order):
            assert float(nearest[order[k]]) == radii[-1]  # the next center is at the covering radius
    assert all(later <= earlier for earlier, later in zip(radii[:-1], radii[1:], strict=True))
    assert radii[-1] < radii[0]


def test_dense_path_matches_brute_force_on_cpu():
    """The CUDA code path (norm expansion, device-side argmax) run on CPU."""
    x = gaussian(300, 32, 12)
    first = brute_force(x, 1)[0]
    assert kcenters._farthest_first_dense(x, 100, None, first, 64).tolist() == brute_force(x, 100)
    start = torch.arange(0, 300, 15)
    assert kcenters._farthest_first_dense(x, 80, start, None, 50).tolist() == brute_force(x, 80, start=start.tolist())
    half = x.half()
    assert kcenters._farthest_first_dense(half, 60, None, first, 64).tolist() == brute_force(half.float(), 60)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_and_does_not_synchronise_per_center():
    x = gaussian(2000, 64, 13)
    expected = brute_force(x[:300], 100)
    assert greedy_k_centers(x[:300].cuda(), 100).tolist() == expected
    syncs = []
    for budget in (5, 200):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                greedy_k_centers(x.cuda(), budget)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        syncs.append(sum("synchroniz" in str(w.message) for w in caught))
    assert syncs[0] == syncs[1]  # a fixed number of synchronisations, not one per center


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_matches_brute_force_on_upcast_values(dtype):
    x = gaussian(400, 64, 14).to(dtype)
    assert greedy_k_centers(x.cuda(), 120, seed=3).tolist() == brute_force(x.float(), 120, seed=3)
