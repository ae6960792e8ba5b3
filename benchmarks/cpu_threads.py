"""Torch thread policies on the CPU: one epoch of digits for the data path and two models, idle or --busy K.

Each policy runs in its own subprocess (``OMP_NUM_THREADS`` set before torch starts): one epoch of the
bundled digits (1,437 images, batch 128) through the datamodule's loader on each data path (no model), and
preact ResNet8 and ResNet20 forward/backward/step on ready batches (model only), best of ``--repeats``.

    python benchmarks/cpu_threads.py
    python benchmarks/cpu_threads.py --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from busy import busy


def measure(repeats: int) -> dict[str, float]:
    import torch

    from lightning_proxy.datamodules import DigitsDataModule
    from lightning_proxy.models import build_model

    def best(run) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    out = {}
    for path in ("items", "tensor"):
        dm = DigitsDataModule(batch_size=128, data_path=path)
        out[f"loader, one epoch ({path} path)"] = best(lambda dm=dm: [None for _ in dm.train_dataloader()])
    batches = [(x, y) for x, y, _ in DigitsDataModule(batch_size=128).train_dataloader()]
    for arch in ("preact_resnet8", "preact_resnet20"):
        model = build_model(arch, num_classes=10, in_channels=1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def epoch(model=model, optimizer=optimizer) -> None:
            for x, y in batches:
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

        out[f"{arch}, model only"] = best(epoch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="policies: threads per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, metavar="K", help="run K CPU-bound processes meanwhile")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.repeats)))
        return
    results = {}
    with busy(args.busy):
        for threads in args.threads:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), LIGHTNING_PROXY_THREADS=str(threads))
            argv = [sys.executable, os.path.abspath(__file__), "--worker", "--repeats", str(args.repeats)]
            run = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            results[threads] = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"{os.cpu_count()} cores, busy processes {args.busy}; seconds, best of {args.repeats}\n")
    print("| | " + " | ".join(f"torch threads {t}" for t in args.threads) + " |")
    print("| --- |" + " --- |" * len(args.threads))
    for key in results[args.threads[0]]:
        print(f"| {key} | " + " | ".join(f"{results[t][key]:.2f} s" for t in args.threads) + " |")


if __name__ == "__main__":
    main()
