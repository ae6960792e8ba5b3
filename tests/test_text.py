"""The text half: the Amazon CSV reader, the token cache, the encodings, fastText and VDCNN."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ddp_checks import assert_every_example_once_per_epoch

from lightning_proxy.cli import main
from lightning_proxy.datamodules import AmazonReviewsDataModule
from lightning_proxy.datamodules.text import (
    ALPHABET,
    NGRAM_MULTIPLIER,
    TextBatches,
    TokenCache,
    fnv1a,
    ngram_ids,
    read_reviews,
    write_synthetic_reviews,
)
from lightning_proxy.experiments.runs import train
from lightning_proxy.models import build_model
from lightning_proxy.module import ClassificationModule
from lightning_proxy.selection import load_ranking
from lightning_proxy.training import Training


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_reader_on_quoting_escaped_newlines_commas_and_a_real_newline(tmp_path):
    path = _write(
        tmp_path / "train.csv",
        '"2","Great, really","It said ""wow""\\nand more"\n'
        '"1","multi\nline title","plain"\n'
        '"2","","no title, only text"\n',
    )
    assert list(read_reviews(path, 2)) == [
        (1, 'Great, really It said "wow" and more'),
        (0, "multi\nline title plain"),
        (1, " no title, only text"),
    ]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ('"2","title only"\n', "line 3: expected 3 fields"),
        ('"3","t","x"\n', "line 3: the class must be a whole number in 1..2, got '3'"),
        ('"good","t","x"\n', "line 3: the class must be"),
    ],
)
def test_a_malformed_row_is_named_by_file_and_line(tmp_path, row, problem):
    path = _write(tmp_path / "train.csv", '"1","a","b"\n"2","c","d"\n' + row)
    with pytest.raises(ValueError, match=f"train.csv, {problem}"):
        list(read_reviews(path, 2))


def test_fnv1a_and_word_ngram_ids_by_hand():
    # FNV-1a 32: h = 2166136261; per byte h = (h ^ byte) * 16777619 mod 2^32
    h = 2166136261
    for byte in b"ok":
        h = ((h ^ byte) * 16777619) % 2**32
    assert fnv1a("ok") == h and fnv1a("a") == 0xE40C292C  # the published FNV-1a test vector of "a"
    buckets = 1000
    a, b, c = fnv1a("a"), fnv1a("b"), fnv1a("c")
    bigram = lambda x, y: (x * NGRAM_MULTIPLIER + y) % 2**64 % buckets + 1  # noqa: E731
    trigram = lambda x, y, z: ((x * NGRAM_MULTIPLIER + y) % 2**64 * NGRAM_MULTIPLIER + z) % 2**64 % buckets + 1  # noqa: E731
    hashes = np.array([a, b, c, c], dtype=np.uint64)  # row 0: "a b c", row 1: "c"
    ids, counts = ngram_ids(hashes, np.array([3, 1]), 2, buckets)
    expected_0 = [a % buckets + 1, b % buckets + 1, c % buckets + 1, bigram(a, b), bigram(b, c)]
    assert counts.tolist() == [5, 1] and ids.tolist() == [*expected_0, c % buckets + 1]
    ids, counts = ngram_ids(hashes[:3], np.array([3]), 3, buckets)
    assert ids.tolist() == [*expected_0, trigram(a, b, c)]


def test_word_and_character_encodings_of_a_pool(tmp_path):
    folder = tmp_path / "amazon_review_polarity_csv"
    folder.mkdir()
    _write(folder / "train.csv", '"1","Hi!","ok ok"\n"2","é","x"\n')
    _write(folder / "test.csv", '"1","a","b"\n')
    words = AmazonReviewsDataModule(root=str(tmp_path), buckets=50, batch_size=2)
    ids, targets, index = next(iter(words.scoring_dataloader()))
    hi, bang, ok = (fnv1a(w) % 50 + 1 for w in ("hi", "!", "ok"))
    pairs = [
        (fnv1a(x) * NGRAM_MULTIPLIER + fnv1a(y)) % 2**64 % 50 + 1 for x, y in (("hi", "!"), ("!", "ok"), ("ok", "ok"))
    ]
    assert ids[0].tolist() == [hi, bang, ok, ok, *pairs]
    assert targets.tolist() == [0, 1] and index.tolist() == [0, 1] and words.in_channels == 51
    chars = AmazonReviewsDataModule(root=str(tmp_path), encoding="chars", char_length=8, batch_size=2)
    ids, _, _ = next(iter(chars.scoring_dataloader()))
    code = {ch: i + 2 for i, ch in enumerate(ALPHABET)}
    assert ids[0].tolist() == [code[ch] for ch in "hi! ok o"]
    assert ids[1].tolist() == [1, 1, code[" "], code["x"], 0, 0, 0, 0]  # é: two unknown bytes; then padding
    assert chars.in_channels == 71 == len(ALPHABET) + 2


def test_token_cache_is_reused_and_rebuilt_when_settings_or_the_file_change(tmp_path):
    path = _write(tmp_path / "train.csv", '"1","A","b"\n"2","c","D"\n')
    first = TokenCache.of(path, 2)
    again = TokenCache.of(path, 2)
    assert first.built and not again.built and again.folder == first.folder
    other = TokenCache.of(path, 2, char_length=3)
    assert other.built and other.folder != first.folder and other.char_offsets.tolist() == [0, 3, 3 + 3]
    upper = TokenCache.of(path, 2, lowercase=False)
    assert upper.built and upper.words[0] == fnv1a("A") and first.words[0] == fnv1a("a")
    _write(path, '"1","A","b"\n"2","c","D"\n"1","e","f"\n')
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = TokenCache.of(path, 2)
    assert changed.built and len(changed) == 3
    assert isinstance(changed.words, np.memmap) and changed.labels.tolist() == [0, 1, 0]


def test_vdcnn_sizes_and_shapes_follow_the_papers():
    """SVP's appendix table gives VDCNN29 16.64M and VDCNN9 14.17M parameters on Amazon Review Polarity; the
    count follows from Conneau et al.'s layers: embedding 71 x 16, conv 16 -> 64, blocks of two convs with
    batch norm, k-max 8 of 512, then 4096 -> 2048 -> 2048 -> classes."""

    def count(blocks, classes):
        conv = lambda i, o: i * o * 3 + o  # noqa: E731
        total = 71 * 16 + conv(16, 64)
        width = 64
        for n, out in zip(blocks, (64, 128, 256, 512), strict=True):
            for _ in range(n):
                total += conv(width, out) + conv(out, out) + 2 * 2 * out
                width = out
        return total + (4096 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * classes + classes)

    for arch, blocks, paper in (("vdcnn29", (5, 5, 2, 2), 16.64), ("vdcnn9", (1, 1, 1, 1), 14.17)):
        model = build_model(arch, num_classes=2, in_channels=71)
        parameters = sum(p.numel() for p in model.parameters())
        assert parameters == count(blocks, 2) and round(parameters / 1e6, 2) == paper
    ids = torch.randint(0, 71, (3, 1014))
    model = build_model("vdcnn29", num_classes=5, in_channels=71).eval()
    assert model(ids).shape == (3, 5) and model.forward_features(ids).shape == (3, 2048)


def test_fasttext_is_a_mean_of_embeddings_without_the_padding():
    model = build_model("fasttext", num_classes=3, in_channels=20, dim=4)
    table = model.backbone.embedding.weight
    features = model.forward_features(torch.tensor([[5, 7, 0, 0], [3, 0, 0, 0]]))
    assert torch.allclose(features[0], (table[5] + table[7]) / 2) and torch.allclose(features[1], table[3])
    assert torch.equal(model(torch.tensor([[5, 7]])), torch.zeros(1, 3))  # fastText's zero output matrix


def test_text_batches_cover_every_example_once_per_epoch_across_ranks():
    rows = np.arange(11)
    shards = [
        TextBatches(lambda r: torch.from_numpy(r)[:, None], torch.zeros(11, dtype=torch.long), rows, 2, True, r, 2)
        for r in (0, 1)
    ]
    for epoch in (0, 1):
        seen = []
        for shard in shards:
            shard.sampler.set_epoch(epoch)
            for ids, _, index in shard:
                assert torch.equal(ids[:, 0], index)  # each batch encodes the rows it names
                seen += index.tolist()
        assert len(seen) == 12 and set(seen) == set(range(11))  # 11 padded to 12, as DistributedSampler pads


def test_fasttext_learns_the_synthetic_reviews_and_writes_rankings_of_the_pool(tmp_path):
    write_synthetic_reviews(tmp_path / "data", train_rows=600, test_rows=200)
    callbacks = [
        {"class_path": "lightning_proxy.callbacks.ForgettingEvents"},
        {"class_path": "lightning_proxy.callbacks.PostTrainingScores", "init_args": {"embeddings": True}},
    ]
    training = Training(
        "configs/amazon_polarity_fasttext.yaml",
        {
            "data.root": str(tmp_path / "data"),
            "data.buckets": 10_000,
            "data.batch_size": 32,
            "model.lr": 8.0,
            "trainer.max_epochs": 10,
            "trainer.enable_progress_bar": False,
            "trainer.devices": 1,
        },
    )
    result = train(tmp_path / "run", training, callbacks=callbacks)
    assert result["best_val_acc"] > 0.9
    for statistic in ("forgetting", "entropy", "least_confidence"):
        ranking = load_ranking(tmp_path / "run" / f"{statistic}.npz")
        assert sorted(ranking.indices.tolist()) == list(range(600))
        assert ranking.metadata["dataset"] == "amazon_review_polarity" and ranking.metadata["num_examples"] == 600
    with open(tmp_path / "data/amazon_review_polarity_csv/train.csv", newline="") as handle:
        labels = [int(row[0]) - 1 for row in csv.reader(handle)]
    assert AmazonReviewsDataModule(root=str(tmp_path / "data")).targets.tolist() == labels


def test_ddp_two_processes_see_every_text_example_of_the_subset_once_per_epoch(ddp_fits):
    out = ddp_fits / "text"
    subset = np.load(out / "subset.npy")
    assert len(subset) == round(0.5 * 301)
    assert_every_example_once_per_epoch(out, subset)
    forgetting = load_ranking(out / "forgetting.npz")
    assert forgetting.metadata["num_examples"] == 301 and set(subset.tolist()) <= set(forgetting.indices.tolist())


def test_coreset_and_active_on_synthetic_reviews_end_to_end(tmp_path, monkeypatch):
    """The text path through the experiments: fastText ranks and selects, VDCNN9 trains on what it keeps."""
    from lightning_proxy.experiments.active import active
    from lightning_proxy.experiments.coreset import coreset

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(root / "configs")
    write_synthetic_reviews("data/amazon_synthetic", train_rows=400, test_rows=100)
    quick = {"trainer.max_epochs": 1, "trainer.enable_progress_bar": False}
    target = {**quick, "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 2}
    coreset(
        "configs/amazon_synthetic_fasttext.yaml",
        "configs/amazon_synthetic_vdcnn9.yaml",
        output="out/coreset",
        proxy_args=quick,
        target_args=target,
        methods=["forgetting", "kcenters", "random"],
        fractions=[0.3],
        oracle=False,
    )
    results = pd.read_csv("out/coreset/results.csv").set_index("method")
    assert set(results.index) == {"full", "forgetting", "kcenters", "random"}
    assert (results.loc[["forgetting", "kcenters", "random"], "train_examples"] == 120).all()
    assert sorted(load_ranking("out/coreset/seed0/proxy/forgetting.npz").indices.tolist()) == list(range(400))
    centers = np.load("out/coreset/seed0/kcenters/0.3/subset.npy")  # what k-centers chose, the target's subset
    assert len(centers) == len(set(centers.tolist())) == 120 and centers.max() < 400
    assert Path("out/coreset/coreset.png").is_file()
    active(
        "configs/amazon_synthetic_fasttext.yaml",
        "configs/amazon_synthetic_vdcnn9.yaml",
        output="out/active",
        proxy_args={**quick, "trainer.limit_val_batches": 0},
        target_args=target,
        methods=["least_confidence", "random"],
        selectors=["proxy"],
        schedule=[0.05, 0.05],
        budgets=[0.15],
    )
    rows = pd.read_csv("out/active/results.csv")
    assert rows.labelled.tolist() == [60, 60] and set(rows.method) == {"least_confidence", "random"}
    assert Path("out/active/active.png").is_file()


def test_mismatched_encodings_and_options_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="VDCNN reads character ids, and its input has 10,000,001 ids"):
        build_model("vdcnn9", num_classes=2, in_channels=10_000_001)
    with pytest.raises(ValueError, match="k-max pooling keeps 8 positions and its three poolings left 4: give it at"):
        build_model("vdcnn9", num_classes=2, in_channels=71)(torch.randint(0, 71, (2, 32)))
    with pytest.raises(ValueError, match="sparse gradients updates with plain SGD"):
        ClassificationModule(arch="fasttext", in_channels=100, arch_kwargs={"sparse": True}, optimizer="adam")
    for image_option in ("flip_p", "data_path", "synthetic"):  # options of the image layer, not of every pool
        with pytest.raises(TypeError, match=image_option):
            AmazonReviewsDataModule(root=str(tmp_path), **{image_option: "x"})
    with pytest.raises(ValueError, match="variant is 'polarity' or 'full'"):
        AmazonReviewsDataModule(root=str(tmp_path), variant="imdb")
    with pytest.raises(FileNotFoundError, match="amazon_review_full_csv/train.csv does not exist"):
        _ = AmazonReviewsDataModule(root=str(tmp_path), variant="full").pool_size


@pytest.mark.parametrize("option", ["--data.flip_p", "--data.data_path"])
def test_an_image_option_given_to_a_text_pool_is_one_line(option, capsys):
    config = str(Path(__file__).parents[1] / "configs" / "amazon_full_fasttext.yaml")
    with pytest.raises(SystemExit):
        main(["fit", "--config", config, option, "0.5"])
    assert capsys.readouterr().err.strip().splitlines() == [f"lightning-proxy fit: error: {option} is not an option"]


@pytest.mark.parametrize("name", ["fasttext", "vdcnn9", "vdcnn17", "vdcnn29", "vdcnn49"])
def test_every_text_model_builds_and_runs_on_token_ids(name):
    vocabulary = 1001 if name == "fasttext" else 71
    model = build_model(name, num_classes=5, in_channels=vocabulary).eval()
    ids = torch.randint(0, vocabulary, (2, 64 if name == "fasttext" else 256))
    features = model.forward_features(ids)
    assert model(ids).shape == (2, 5) and features.shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(features), model(ids))


def test_harder_synthetic_reviews_flip_the_labels_asked_and_skew_the_classes(tmp_path):
    def labels(folder, split):
        with open(folder / f"{split}.csv", newline="", encoding="utf-8") as handle:
            return np.array([int(row[0]) for row in csv.reader(handle)])

    clean = write_synthetic_reviews(tmp_path / "clean", "full", train_rows=4000, test_rows=500, seed=4)
    noisy = write_synthetic_reviews(tmp_path / "noisy", "full", train_rows=4000, test_rows=500, seed=4, label_noise=0.2)
    flipped = labels(clean, "train") != labels(noisy, "train")  # the same words: only the flips differ
    assert abs(flipped.mean() - 0.2) < 0.02
    assert (labels(clean, "test") == labels(noisy, "test")).all()  # test labels stay true
    with open(clean / "train.csv", encoding="utf-8") as a, open(noisy / "train.csv", encoding="utf-8") as b:
        assert [r[1:] for r in csv.reader(a)] == [r[1:] for r in csv.reader(b)]
    skewed = write_synthetic_reviews(tmp_path / "skewed", "full", train_rows=6000, test_rows=10, imbalance=4)
    counts = np.bincount(labels(skewed, "train"))[1:]
    assert 3.3 < counts[0] / counts[-1] < 4.8 and (np.diff(counts) < 0).all()
    with pytest.raises(ValueError, match="label_noise in"):
        write_synthetic_reviews(tmp_path / "bad", label_noise=1.0)


def test_shared_vocabulary_lends_a_neighbour_classes_words(tmp_path):
    folder = write_synthetic_reviews(tmp_path, "full", train_rows=500, test_rows=10, shared=0.5, seed=1)
    lent = own = 0
    with open(folder / "train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            label = int(row[0]) - 1
            cues = re.findall(r"class(\d)cue", row[1] + " " + row[2])
            own += sum(int(c) == label for c in cues)
            lent += sum(abs(int(c) - label) == 1 for c in cues)
            assert all(abs(int(c) - label) <= 1 for c in cues)
    assert 0.35 < lent / (lent + own) < 0.5  # half borrowed, less the clipped ones at the ends that stay own


def test_debian_descriptions_become_a_release_the_text_datamodule_reads(tmp_path):
    import importlib.util
    import lzma

    script = Path(__file__).parents[1] / "benchmarks" / "debian_descriptions.py"
    spec = importlib.util.spec_from_file_location("debian_descriptions", script)
    debian = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(debian)
    packages, translations = [], []
    for i, section in enumerate(["admin", "games", "net", "science", "sound", "libs"] * 4):
        md5 = f"{i:032x}"
        source = f"Source: src{i}\n" if i % 4 else ""
        packages.append(f"Package: pkg{i}\n{source}Description: s\nDescription-md5: {md5}\nSection: {section}\n")
        translations.append(
            f'Package: pkg{i}\nDescription-md5: {md5}\nDescription-en: tool {i}, "q"\n line one\n .\n {section} line\n'
        )
    packages.append("Package: pkg1-data\nSource: src1\nDescription-md5: extra\nSection: games\n")  # no translation
    (tmp_path / "Packages").write_text("\n".join(packages))
    with lzma.open(tmp_path / "Translation-en.xz", "wt") as handle:
        handle.write("\n".join(translations))
    debian.main(
        [
            "--output",
            str(tmp_path / "out"),
            "--packages",
            str(tmp_path / "Packages"),
            "--translations",
            str(tmp_path / "Translation-en.xz"),
        ]
    )
    dm = AmazonReviewsDataModule(root=str(tmp_path / "out"), variant="full", buckets=1000)
    assert len(dm.targets) == 15 and sorted(dm.targets.tolist()) == sorted([0, 1, 2, 3, 4] * 3)  # 1 of 4 each to test
    with open(tmp_path / "out" / "amazon_review_full_csv" / "train.csv", newline="", encoding="utf-8") as handle:
        row = next(csv.reader(handle))
    label = int(row[0])
    assert row[1].startswith("tool ") and row[2] == f"line one\\n\\n{debian.SECTIONS[label - 1]} line"
