"""A real five-class text set in the Amazon Review Full release's format, from Debian's package descriptions.

No review set can be downloaded on a machine that reaches only package registries, but Debian's own index
is real text written by thousands of people: each package's summary (the title) and long description (the
text), labelled by the archive section it is filed in. Five topical sections that overlap as real labels do
(``admin`` and ``net`` share many tools, ``science`` and ``sound`` signal processing): 4,877 descriptions of
Debian 12, one per source package (its ``-data``/``-dev``/``-doc`` siblings repeat the same text, and would
leak between the splits), about 80/20 into train and test within each section.

    python benchmarks/debian_descriptions.py --output data/debian_sections

writes ``data/debian_sections/amazon_review_full_csv/{train,test}.csv``, which
``AmazonReviewsDataModule(root="data/debian_sections", variant="full")`` reads as it reads the release.
The package list is apt's (``apt-cache dumpavail``, or ``--packages``); the long descriptions are the
archive's ``Translation-en`` (``--translations``: a file, or downloaded from the mirror when missing).
"""

from __future__ import annotations

import argparse
import csv
import lzma
import os
import subprocess
import tempfile
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SECTIONS = ("admin", "games", "net", "science", "sound")  # labels 1..5 in this order
TRANSLATIONS_URL = "http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.xz"


def stanzas(text: str) -> Iterator[dict[str, str]]:
    """The fields of each paragraph of a Debian control file; continuation lines joined with newlines."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key is not None:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def descriptions(packages: str, translations: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Section -> source package -> ``(summary, long description)``, the longest description of each source."""
    long = {f["Description-md5"]: f["Description-en"] for f in stanzas(translations) if "Description-md5" in f}
    out: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
    for fields in stanzas(packages):
        section = fields.get("Section", "").split("/")[-1]
        text = long.get(fields.get("Description-md5", ""))
        if section not in SECTIONS or text is None:
            continue
        summary, _, body = text.partition("\n")
        body = "\n".join("" if line.strip() == "." else line.strip() for line in body.splitlines()).strip()
        source = fields.get("Source", fields["Package"]).split()[0]
        kept = out[section].get(source)
        if kept is None or len(body) > len(kept[1]):
            out[section][source] = (summary.strip(), body)
    return out


def write_release(sets: dict[str, dict[str, tuple[str, str]]], output: Path, test_share: float, seed: int) -> Path:
    """``amazon_review_full_csv/{train,test}.csv`` under ``output``: class, title, text, every field quoted and
    newlines written as the two characters ``\\n``, as the release; each file written whole, then renamed."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[int, str, str]]] = {"train": [], "test": []}
    for label, section in enumerate(SECTIONS, start=1):
        items = [sets.get(section, {})[source] for source in sorted(sets.get(section, {}))]
        if len(items) < 2:
            raise SystemExit(f"section {section!r} has {len(items)} described packages: is the package list complete?")
        order = rng.permutation(len(items))
        n_test = max(1, round(test_share * len(items)))
        for split, chosen in (("test", order[:n_test]), ("train", order[n_test:])):
            rows[split] += [(label, *items[i]) for i in chosen]
    folder = output / "amazon_review_full_csv"
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        order = rng.permutation(len(split_rows))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{split}.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            for i in order:
                label, title, text = split_rows[i]
                writer.writerow([label, title.replace("\n", "\\n"), text.replace("\n", "\\n")])
        os.replace(tmp, folder / f"{split}.csv")
    return folder


def read_translations(path: Path) -> str:
    if not path.exists():
        print(f"downloading {TRANSLATIONS_URL} to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(TRANSLATIONS_URL, path)  # noqa: S310 (a fixed https-less Debian mirror URL)
    return lzma.open(path, "rt", encoding="utf-8").read()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("data/debian_sections"))
    parser.add_argument("--packages", type=Path, help="a Packages file (default: apt-cache dumpavail)")
    parser.add_argument("--translations", type=Path, default=Path("data/debian_sections/Translation-en.xz"))
    parser.add_argument("--test_share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.packages is not None:
        packages = args.packages.read_text(encoding="utf-8")
    else:
        packages = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    sets = descriptions(packages, read_translations(args.translations))
    folder = write_release(sets, args.output, args.test_share, args.seed)
    counts = {s: len(sets.get(s, {})) for s in SECTIONS}
    print(f"wrote {folder}/train.csv and test.csv from {sum(counts.values()):,} descriptions: {counts}")


if __name__ == "__main__":
    main()
