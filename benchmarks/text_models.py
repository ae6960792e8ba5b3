"""Training steps per second of SVP's text proxies against its target: the cost ratio behind SVP's speed-up.

fastText (word uni+bigram ids, ``--words`` a review, 10M buckets, sparse updates) and VDCNN9 / VDCNN29 (1,014
characters), batches of ``--batch-size`` random ids, SGD steps under ``torch.autocast`` in ``--precision``
(``bf16-mixed``, ``16-mixed`` or ``32-true``), after ``--warmup`` steps; each model's median of ``--repeats``
timings of ``--steps`` steps, and its steps per second over VDCNN29's.

    python benchmarks/text_models.py --device cuda --precision bf16-mixed
    python benchmarks/text_models.py --steps 3 --char-length 128 --buckets 10000   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lightning_proxy.datamodules.text import ALPHABET
from lightning_proxy.models import build_model
from lightning_proxy.threads import apply_thread_policy

DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None}


def steps_per_second(name: str, args: argparse.Namespace, device: torch.device) -> float:
    torch.manual_seed(0)
    if name == "fasttext":
        model = build_model("fasttext", 2, args.buckets + 1, sparse=True)
        batch = torch.randint(1, args.buckets + 1, (args.batch_size, args.words), device=device)
    else:
        model = build_model(name, 2, len(ALPHABET) + 2)
        batch = torch.randint(1, len(ALPHABET) + 2, (args.batch_size, args.char_length), device=device)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    targets = torch.randint(0, 2, (args.batch_size,), device=device)
    dtype = DTYPES[args.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16 and name != "fasttext")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(batch), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    timings = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(args.steps / (time.perf_counter() - began))
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--char-length", type=int, default=1014)
    parser.add_argument("--words", type=int, default=200, help="word and bigram ids a review (Amazon: about 200)")
    parser.add_argument("--buckets", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    apply_thread_policy()
    device = torch.device(args.device)
    rates = {name: steps_per_second(name, args, device) for name in ("vdcnn29", "vdcnn9", "fasttext")}
    print(f"| model | steps/s ({args.precision}, batch {args.batch_size}, {device.type}) | over VDCNN29 |")
    print("| --- | ---: | ---: |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['vdcnn29']:.1f}x |")


if __name__ == "__main__":
    main()
