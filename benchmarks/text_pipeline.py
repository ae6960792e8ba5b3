"""The text data path at Amazon scale: tokenising and caching a CSV once, loading the cache again, one epoch.

Writes a synthetic Amazon-format CSV (``--rows`` reviews of ``--words`` words, 1,000,000 of 20-160 by
default: the real sets' 90-word mean), then, each phase in a fresh process of this script so that its time
and memory are its own:

- ``cache``: the first ``AmazonReviewsDataModule`` build reads the CSV and writes the token cache (rows/s);
- ``load``: a new datamodule on the same CSV finds the cache: pool size, targets and the subset (seconds),
  and the anonymous resident memory it holds per row (``RssAnon`` of ``/proc/self/status``, so the
  memory-mapped tokens, shared with the page cache, do not count);
- ``epoch``: one epoch of ``train_dataloader()`` batches of 128 in the fastText encoding (word uni+bigrams
  hashed into 10M buckets; rows/s) and of the VDCNN encoding (1,014 characters).

    python benchmarks/text_pipeline.py
    python benchmarks/text_pipeline.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_proxy.datamodules.text import AmazonReviewsDataModule, write_synthetic_reviews
from lightning_proxy.threads import apply_thread_policy


def anonymous_kib() -> int:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0])


def phase(name: str, root: str) -> dict[str, float]:
    apply_thread_policy()
    before = anonymous_kib()
    began = time.perf_counter()
    dm = AmazonReviewsDataModule(root=root, encoding="chars" if name == "epoch_chars" else "words")
    dm.setup("fit")
    rows = dm.pool_size
    out = {"rows": rows, "seconds": time.perf_counter() - began}
    out["anonymous_bytes_per_row"] = (anonymous_kib() - before) * 1024 / rows
    if name.startswith("epoch"):
        began = time.perf_counter()
        tokens = 0
        for ids, _, _ in dm.train_dataloader():
            tokens += int((ids > 0).sum())
        out["epoch_seconds"] = time.perf_counter() - began
        out["ids_per_row"] = tokens / rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--words", type=int, nargs=2, default=[20, 160])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.root)))
        return
    with tempfile.TemporaryDirectory() as root:
        began = time.perf_counter()
        folder = write_synthetic_reviews(root, train_rows=args.rows, test_rows=1000, words=tuple(args.words))
        size = (folder / "train.csv").stat().st_size
        print(
            f"wrote {args.rows:,} reviews ({size / 2**20:.0f} MiB) in {time.perf_counter() - began:.0f} s", flush=True
        )
        results = {}
        for name in ("cache", "load", "epoch_words", "epoch_chars"):
            command = [sys.executable, __file__, "--phase", name, "--root", root]
            results[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            print(name, results[name], flush=True)
        cache, load = results["cache"], results["load"]
        print()
        print("| phase | seconds | rows per second | goal |")
        print("| --- | ---: | ---: | --- |")
        print(f"| tokenise and cache | {cache['seconds']:.1f} | {args.rows / cache['seconds']:,.0f} | < 120 s |")
        print(f"| load the cache again | {load['seconds']:.2f} | {args.rows / load['seconds']:,.0f} | < 5 s |")
        for name, what in (("epoch_words", "fastText encoding"), ("epoch_chars", "VDCNN encoding")):
            seconds = results[name]["epoch_seconds"]
            print(f"| one epoch, {what} | {seconds:.1f} | {args.rows / seconds:,.0f} | |")
        print()
        memory = load["anonymous_bytes_per_row"]
        ids = results["epoch_words"]["ids_per_row"]
        print(f"Resident anonymous memory per row after loading: {memory:.0f} bytes (goal < 100); {ids:.0f} ids a row.")


if __name__ == "__main__":
    main()
