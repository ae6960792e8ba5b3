"""Online pruning against full training and against random dropping of as many example passes, over seeds.

For each pool (digits, MNIST-1D, the synthetic Amazon reviews with fastText) and seed: the config as it is
(``full``), the config with :class:`~lightning_proxy.callbacks.OnlinePruning` added (``infobatch``, InfoBatch's
ratio 0.5 and delta 0.875; for digits this is ``configs/digits_online_pruning.yaml`` itself), and random
per-epoch dropping (``random``) at the ratio that costs the same example passes as InfoBatch's mean over the
seeds. Each training's example passes come from its ``train/examples_seen``, its accuracy is the best
validation accuracy at any epoch. Differences are paired by seed. One line per finished training, the table last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
POOLS = {
    "digits": ("configs/digits.yaml", "configs/digits_online_pruning.yaml"),
    "mnist1d": ("configs/mnist1d.yaml", None),
    "reviews": ("configs/amazon_synthetic_fasttext.yaml", None),
}


def pruning(policy: str, ratio: float) -> dict:
    init = {"policy": policy, "ratio": ratio, "delta": 0.875}
    return {"class_path": "lightning_proxy.callbacks.OnlinePruning", "init_args": init}


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):+.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--output", default=None, help="folder of the runs (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs instead of each config's")
    args = parser.parse_args()

    from lightning_proxy.datamodules.text import write_synthetic_reviews
    from lightning_proxy.experiments.runs import Progress, train
    from lightning_proxy.training import Training

    out = Path(args.output or tempfile.mkdtemp(prefix="online_pruning_"))
    reviews = ROOT / "data" / "amazon_synthetic"
    if "reviews" in args.pools and not (reviews / "amazon_review_polarity_csv" / "train.csv").is_file():
        write_synthetic_reviews(reviews, train_rows=3000, test_rows=600)
    progress = Progress(len(args.pools) * 3 * len(args.seeds))
    rows = []
    for pool in args.pools:
        config, pruned_config = (str(ROOT / c) if c else None for c in POOLS[pool])
        base = yaml.safe_load(Path(config).read_text())["trainer"].get("callbacks", [])
        extra = {"data.root": str(reviews)} if pool == "reviews" else {}
        if args.epochs:
            extra["trainer.max_epochs"] = args.epochs
        results: dict[str, dict[int, dict]] = {"full": {}, "infobatch": {}, "random": {}}

        def run(variant: str, seed: int, training: Training, callbacks: list | None, pool=pool, results=results):
            label = f"{pool} {variant} seed {seed}"
            folder = out / pool / variant / f"seed{seed}"
            results[variant][seed] = train(folder, training, callbacks, seed=seed, progress=(progress, label))

        for seed in args.seeds:
            run("full", seed, Training(config, extra), None)
            if pruned_config is not None:  # the config file itself, nothing changed
                run("infobatch", seed, Training(pruned_config, extra), None)
            else:
                run("infobatch", seed, Training(config, extra), [*base, pruning("infobatch", 0.5)])
        # random dropping of as many passes: ratio = passes saved / passes of the pruned epochs
        full_seen = statistics.mean(r["examples_seen"] for r in results["full"].values())
        saved = full_seen - statistics.mean(r["examples_seen"] for r in results["infobatch"].values())
        epochs = len(results["full"][args.seeds[0]]["epoch_val_acc"])
        pruned_epochs = sum(0 < e < 0.875 * epochs for e in range(epochs))
        ratio = min(0.95, saved / (full_seen / epochs * pruned_epochs))
        for seed in args.seeds:
            run("random", seed, Training(config, extra), [*base, pruning("random", round(ratio, 3))])
        seeds = args.seeds
        for variant in ("infobatch", "random"):
            share = [results[variant][s]["examples_seen"] / results["full"][s]["examples_seen"] for s in args.seeds]
            diff = [100 * (results[variant][s]["best_val_acc"] - results["full"][s]["best_val_acc"]) for s in seeds]
            seconds = [results[variant][s]["seconds"] / results["full"][s]["seconds"] for s in args.seeds]
            rows.append((pool, variant, statistics.mean(share), diff, statistics.mean(seconds), ratio))
        accuracy = [100 * results["full"][s]["best_val_acc"] for s in args.seeds]
        rows.append((pool, "full", 1.0, accuracy, 1.0, None))

    print(f"\nseeds {args.seeds}; runs in {out}")
    print(
        "\n| pool | training | example passes (of full) | best val acc (full), minus full (points) | wall (of full) |"
    )
    print("| --- | --- | ---: | ---: | ---: |")
    for pool, variant, share, values, seconds, ratio in rows:
        name = variant if variant != "random" else f"random, ratio {ratio:.2f}"
        shown = mean_std(values).lstrip("+") if variant == "full" else mean_std(values)
        print(f"| {pool} | {name} | {share:.2f} | {shown} | {seconds:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
