"""Amazon Review Polarity and Full from the public CSV releases, tokenised once into a memory-mapped cache.

The releases (Zhang et al. 2015, as users have them on disk) are ``amazon_review_polarity_csv/{train,test}.csv``
and ``amazon_review_full_csv/{train,test}.csv``: no header, three quoted columns (class ``1..k``, title,
text), quotes doubled inside a field and newlines written as the two characters ``\\n``. A pool of millions
of reviews holds no Python string per row: the first use reads the CSV once and writes, in a folder beside
it named by the tokenizer settings and the file's size and time, flat arrays with row offsets (memory-mapped
on every later use):

- ``words``: the FNV-1a hash (32 bit, as fastText's dictionary hashes words, though on unsigned bytes) of
  every word and punctuation mark of the lower-cased title and text, split much as fastText's preprocessing
  of these sets splits them; words share the hash buckets with the n-grams (fastText keeps a vocabulary);
- ``chars``: VDCNN's encoding (Conneau et al. 2017): every byte of the lower-cased text as an id of its
  69-symbol alphabet (2..70; 1 for anything else), truncated at ``char_length`` (1,014).

A batch encodes its rows from them as a ``B x L`` int64 tensor of ids, 0 the padding: ``words`` with word
n-grams hashed into ``buckets`` (fastText's ``-wordNgrams 2 -bucket 10000000``: the n-gram's hash is
``h = h * 116049371 + next word's hash`` over 64 bits, its id ``1 + h % buckets``), ``chars`` padded to
``char_length``. The models read their vocabulary from the datamodule's ``in_channels``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lightning_proxy.datamodules.download import download_and_verify, missing_dataset_error
from lightning_proxy.datamodules.pool import PoolDataModule
from lightning_proxy.datamodules.sharding import ShardedBatches, ShardedShuffle

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{} "  # VDCNN's 69 symbols
PAD, UNKNOWN = 0, 1
NGRAM_MULTIPLIER = 116049371  # fastText's word n-gram hash
WORDS = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark alone
CACHE_FORMAT = 1
_CHAR_IDS = np.full(256, UNKNOWN, dtype=np.uint8)
_CHAR_IDS[[ord(c) for c in ALPHABET]] = np.arange(2, 2 + len(ALPHABET), dtype=np.uint8)

RELEASES = {
    "polarity": (
        "amazon_review_polarity_csv",
        2,
        "https://s3.amazonaws.com/fast-ai-nlp/amazon_review_polarity_csv.tgz",
    ),
    "full": ("amazon_review_full_csv", 5, "https://s3.amazonaws.com/fast-ai-nlp/amazon_review_full_csv.tgz"),
}


def fnv1a(word: str) -> int:
    """32-bit FNV-1a of the word's UTF-8 bytes."""
    h = 2166136261
    for byte in word.encode("utf-8"):
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def read_reviews(path: Path, num_classes: int) -> Iterator[tuple[int, str]]:
    """``(label 0..k-1, title + " " + text)`` of every row; a malformed row raises naming the file and line,
    a file without rows naming the file."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader, rows = csv.reader(handle), 0
        for row in reader:
            rows += 1
            where = f"{path}, line {reader.line_num}"
            if len(row) != 3:
                raise ValueError(
                    f"{where}: expected 3 fields (class, title, text), got {len(row)}: {str(row)[:80]}; "
                    "fix or remove that row"
                )
            if not row[0].strip().isdigit() or not 1 <= int(row[0]) <= num_classes:
                raise ValueError(f"{where}: the class must be a whole number in 1..{num_classes}, got {row[0]!r}")
            yield int(row[0]) - 1, f"{row[1]} {row[2]}".replace("\\n", " ")
    if not rows:
        raise ValueError(f"{path} holds no reviews: put rows of (class, title, text) in it, or give another data.root")


class TokenCache:
    """The memory-mapped arrays of one CSV: ``labels``, ``words`` / ``word_offsets``, ``chars`` / ``char_offsets``."""

    ARRAYS = ("labels", "words", "word_offsets", "chars", "char_offsets")

    def __init__(self, folder: Path, built: bool = False) -> None:
        self.folder, self.built = folder, built
        for name in self.ARRAYS:
            setattr(self, name, np.load(folder / f"{name}.npy", mmap_mode="r"))

    def __len__(self) -> int:
        return len(self.labels)

    @staticmethod
    def settings_of(lowercase: bool, char_length: int) -> dict[str, Any]:
        """What the tokens depend on, whatever their source."""
        return {
            "format": CACHE_FORMAT,
            "words": WORDS.pattern,
            "hash": "fnv1a32",
            "alphabet": ALPHABET,
            "lowercase": lowercase,
            "char_length": char_length,
        }

    @classmethod
    def settings(cls, csv_path: Path, lowercase: bool, char_length: int) -> dict[str, Any]:
        stat = csv_path.stat()
        source = {"name": csv_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {**cls.settings_of(lowercase, char_length), "source": source}

    @classmethod
    def of(cls, csv_path: Path, num_classes: int, lowercase: bool = True, char_length: int = 1014) -> TokenCache:
        """The cache of ``csv_path`` for these settings: read when it exists, else built (once) and read."""
        settings = cls.settings(csv_path, lowercase, char_length)
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        folder = csv_path.parent / ".token_cache" / f"{csv_path.stem}-{key}"
        return cls.at(folder, settings, lambda: read_reviews(csv_path, num_classes), lowercase, char_length)

    @classmethod
    def at(
        cls,
        folder: Path,
        settings: dict[str, Any],
        rows: Callable[[], Iterable[tuple[int, str]]],
        lowercase: bool,
        char_length: int,
    ) -> TokenCache:
        """The cache in ``folder``: read when it is complete, else built from ``rows()`` (``(label, text)``) in a
        folder beside it that is then renamed, so a reader never sees half a cache."""
        if (folder / "settings.json").is_file():
            return cls(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            _build(rows(), tmp, lowercase, char_length)
            (tmp / "settings.json").write_text(json.dumps(settings, indent=2))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process built it first: theirs is the same
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(folder, built=True)


def _build(rows: Iterable[tuple[int, str]], folder: Path, lowercase: bool, char_length: int) -> None:
    labels, words, chars = array("i"), array("I"), bytearray()
    word_offsets, char_offsets = array("q", [0]), array("q", [0])
    hashes: dict[str, int] = {}
    for label, text in rows:
        if lowercase:
            text = text.lower()
        labels.append(label)
        for word in WORDS.findall(text):
            h = hashes.get(word)
            if h is None:
                h = hashes[word] = fnv1a(word)
            words.append(h)
        word_offsets.append(len(words))
        chars += text.encode("utf-8")[:char_length]
        char_offsets.append(len(chars))
    arrays = {
        "labels": np.frombuffer(labels, dtype=np.int32).astype(np.int64),
        "words": np.frombuffer(words, dtype=np.uint32),
        "word_offsets": np.frombuffer(word_offsets, dtype=np.int64),
        "chars": _CHAR_IDS[np.frombuffer(chars, dtype=np.uint8)],
        "char_offsets": np.frombuffer(char_offsets, dtype=np.int64),
    }
    for name, values in arrays.items():
        np.save(folder / f"{name}.npy", values)


def _within(lengths: np.ndarray) -> np.ndarray:
    """Each element's position in its row, for rows of ``lengths`` laid back to back."""
    return np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _ragged(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concatenated slices ``values[offsets[r]:offsets[r + 1]]`` of ``rows``, and each slice's length."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    return values[np.repeat(starts, lengths) + _within(lengths)], lengths


def _pad(flat: np.ndarray, lengths: np.ndarray, width: int | None = None) -> torch.Tensor:
    width = int(lengths.max(initial=1)) if width is None else width
    out = np.zeros((len(lengths), max(width, 1)), dtype=np.int64)
    mask = np.arange(out.shape[1]) < lengths[:, None]
    out[mask] = flat
    return torch.from_numpy(out)


class WordNgrams:
    """Rows of a :class:`TokenCache` -> ``B x L`` ids of their words and word n-grams, hashed into ``buckets``."""

    def __init__(self, cache: TokenCache, ngrams: int, buckets: int) -> None:
        self.cache, self.ngrams, self.buckets = cache, ngrams, buckets

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        hashes, lengths = _ragged(self.cache.words, self.cache.word_offsets, rows)
        return _pad(*ngram_ids(hashes.astype(np.uint64), lengths, self.ngrams, self.buckets))


def ngram_ids(hashes: np.ndarray, lengths: np.ndarray, ngrams: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ids (its words', then its bigrams' and so on to ``ngrams``-grams) and each row's count of them.

    ``hashes`` (uint64) are the rows' word hashes back to back, ``lengths`` the rows' word counts.
    """
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    within = _within(lengths)
    pieces, rows = [hashes % buckets + 1], [row_of]
    h = hashes.copy()  # h[i]: the hash of the n-gram that starts at word i, for the n so far
    for n in range(2, ngrams + 1):
        starts = np.flatnonzero(within + n - 1 < lengths[row_of])  # n - 1 more words in the same row
        h[starts] = h[starts] * np.uint64(NGRAM_MULTIPLIER) + hashes[starts + n - 1]  # wraps at 64 bits
        pieces.append(h[starts] % buckets + 1)
        rows.append(row_of[starts])
    ids, row_of = np.concatenate(pieces), np.concatenate(rows)
    order = np.argsort(row_of, kind="stable")
    return ids[order].astype(np.int64), np.bincount(row_of, minlength=len(lengths))


class Characters:
    """Rows of a :class:`TokenCache` -> ``B x char_length`` character ids, padded."""

    def __init__(self, cache: TokenCache, char_length: int) -> None:
        self.cache, self.char_length = cache, char_length

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        ids, lengths = _ragged(self.cache.chars, self.cache.char_offsets, rows)
        return _pad(ids.astype(np.int64), lengths, self.char_length)


class TextBatches(ShardedBatches):
    """``(ids, targets, pool_indices)`` batches of a pool's rows, shuffled and sharded as
    :class:`~lightning_proxy.datamodules.tensor_batches.TensorBatches` shards image batches."""

    def __init__(
        self,
        encode: Callable[[np.ndarray], torch.Tensor],
        targets: torch.Tensor,
        indices: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.encode, self.targets, self.batch_size = encode, targets, batch_size
        self.indices = np.asarray(indices, dtype=np.int64)
        self.sampler = ShardedShuffle(len(self.indices), shuffle, rank, world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        positions = self.indices[self.sampler.order().numpy()]
        for start in range(0, len(positions), self.batch_size):
            rows = positions[start : start + self.batch_size]
            index = torch.from_numpy(rows)
            yield self.encode(rows), self.targets[index], index


class Reviews:
    """One split as a pool: ``targets``, ``classes`` and ``(ids, label)`` items (the per-item contract)."""

    def __init__(self, cache: TokenCache, encode: Callable[[np.ndarray], torch.Tensor], classes: list[str]) -> None:
        self.encode, self.classes = encode, classes
        self.targets = np.array(cache.labels)  # a copy: 8 bytes a row, writable

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.encode(np.array([i]))[0], int(self.targets[i])


def check_text_options(encoding: str, ngrams: int, buckets: int, char_length: int) -> None:
    """One line for a text encoding that cannot work, before any text is read."""
    if encoding not in ("words", "chars"):
        raise ValueError(f"encoding is 'words' (fastText) or 'chars' (VDCNN), got {encoding!r}")
    if ngrams < 1 or buckets < 1 or char_length < 1:
        raise ValueError(f"ngrams, buckets and char_length must be at least 1; got {ngrams}, {buckets}, {char_length}")


def token_ids(encoding: str, buckets: int) -> int:
    """How many token ids a model reads (its ``in_channels``): the buckets and padding, or the alphabet's."""
    return buckets + 1 if encoding == "words" else len(ALPHABET) + 2


def encoder_of(
    cache: TokenCache, encoding: str, ngrams: int, buckets: int, char_length: int
) -> Callable[[np.ndarray], torch.Tensor]:
    """Rows of ``cache`` -> a batch of token ids: hashed word n-grams (fastText) or characters (VDCNN)."""
    return WordNgrams(cache, ngrams, buckets) if encoding == "words" else Characters(cache, char_length)


def text_batches(dm: PoolDataModule, split: str, indices: np.ndarray, batch_size: int, train: bool) -> TextBatches:
    """A text datamodule's batches of ``indices``: rows of the cached tokens, encoded a batch at a time,
    shuffled and split over the ranks when ``train``; text has no augmentation."""
    rank, world_size = dm.rank_and_world() if train else (0, 1)
    encode, targets = dm.split_pool(split).encode, dm.model_targets(split)
    return TextBatches(encode, targets, indices, batch_size, shuffle=train, rank=rank, world_size=world_size)


class AmazonReviewsDataModule(PoolDataModule):
    """Amazon Review Polarity (2 classes; 3.6M training and 400k test reviews) or Full (5 classes; 3M and 650k)
    from the CSV release in ``root``; validation is the release's test split, as in SVP.

    Args:
        variant: ``polarity`` or ``full``.
        encoding: ``words`` (hashed word n-grams, for ``fasttext``) or ``chars`` (VDCNN's characters).
        ngrams: longest word n-gram (fastText's ``-wordNgrams``; 2 for these sets).
        buckets: hash buckets of the word n-grams (fastText's ``-bucket``: 10,000,000).
        char_length: characters per review (VDCNN: 1,014), truncated or padded.
        lowercase: lower-case the text before tokenising.
    """

    def __init__(
        self,
        variant: Literal["polarity", "full"] = "polarity",
        encoding: Literal["words", "chars"] = "words",
        ngrams: int = 2,
        buckets: int = 10_000_000,
        char_length: int = 1014,
        lowercase: bool = True,
        batch_size: int = 128,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        if variant not in RELEASES:
            raise ValueError(f"variant is 'polarity' or 'full', got {variant!r}")
        check_text_options(encoding, ngrams, buckets, char_length)
        super().__init__(batch_size=batch_size, num_workers=num_workers, **kwargs)
        self.variant, self.encoding, self.ngrams, self.buckets = variant, encoding, ngrams, buckets
        self.char_length, self.lowercase = char_length, lowercase
        folder, self.num_base_classes, self.url = RELEASES[variant]
        self.name = f"amazon_review_{variant}"
        self.folder = Path(self.root) / folder
        self.in_channels = token_ids(encoding, buckets)

    def prepare_data(self) -> None:
        """Download where asked and build the token caches, once per node before the ranks read them."""
        if self.download and not all((self.folder / f"{s}.csv").is_file() for s in ("train", "test")):
            download_and_verify(self.url, self.root)
        for split in ("train", "test"):
            self._cache(split)

    def _cache(self, split: str) -> TokenCache:
        path = self.folder / f"{'train' if split == 'train' else 'test'}.csv"
        if not path.is_file():
            layout = f"{self.folder.name}/\n  train.csv\n  test.csv"
            how = f"--data.download true (needs internet), or extract {self.url} into {Path(self.root).absolute()}"
            raise missing_dataset_error(self.name, path, layout, how)
        return TokenCache.of(path, self.num_base_classes, self.lowercase, self.char_length)

    def encoder(self, cache: TokenCache) -> Callable[[np.ndarray], torch.Tensor]:
        return encoder_of(cache, self.encoding, self.ngrams, self.buckets, self.char_length)

    def build_pool(self, split: str) -> Reviews:
        cache = self._cache(split)
        return Reviews(cache, self.encoder(cache), [str(c) for c in range(1, self.num_base_classes + 1)])

    def batches(
        self, split: str, indices: np.ndarray, batch_size: int, train: bool, augment: bool = False
    ) -> TextBatches:
        return text_batches(self, split, indices, batch_size, train)


def write_synthetic_reviews(
    root: str | Path,
    variant: Literal["polarity", "full"] = "polarity",
    train_rows: int = 2000,
    test_rows: int = 500,
    seed: int = 0,
    words: tuple[int, int] = (5, 40),
    shared: float = 0.0,
    label_noise: float = 0.0,
    imbalance: float = 1.0,
) -> Path:
    """A small release in the real on-disk format (``<root>/amazon_review_<variant>_csv/{train,test}.csv``) whose
    labels are learnable from words: each review mixes words of its class (30 %) with common words, between
    ``words`` in number, and its title and text hold commas, doubled quotes and an escaped newline as the
    release's do.

    As real reviews are harder: ``shared`` is the share of a review's class words taken from a neighbouring
    class instead (a 4-star review reads much like a 5-star one); ``label_noise`` the share of training rows
    whose label is replaced by another class's (the test labels stay true); ``imbalance`` the ratio of the
    most to the least frequent class, the classes' shares falling geometrically from the first."""
    if not (0 <= shared <= 1 and 0 <= label_noise < 1 and imbalance >= 1):
        raise ValueError(
            f"shared must be in [0, 1], label_noise in [0, 1) and imbalance at least 1; got {shared}, "
            f"{label_noise}, {imbalance}"
        )
    folder_name, num_classes, _ = RELEASES[variant]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    common = np.array([f"word{i}" for i in range(200)])
    cues = np.array([[f"class{c}cue{i}" for i in range(20)] for c in range(num_classes)])
    priors = imbalance ** -(np.arange(num_classes) / max(num_classes - 1, 1))
    for split, rows in (("train", train_rows), ("test", test_rows)):
        if imbalance == 1:
            labels = rng.integers(num_classes, size=rows)
        else:
            labels = rng.choice(num_classes, size=rows, p=priors / priors.sum())
        lengths = rng.integers(words[0], words[1] + 1, size=rows)
        owner = np.repeat(labels, lengths)
        cue = rng.random(len(owner)) < 0.3
        if shared > 0:
            borrowed = rng.random(len(owner)) < shared
            neighbour = np.clip(owner + rng.choice([-1, 1], size=len(owner)), 0, num_classes - 1)
            owner = np.where(borrowed, neighbour, owner)
        drawn = np.where(
            cue, cues[owner, rng.integers(20, size=len(owner))], common[rng.integers(200, size=len(owner))]
        )
        if split == "train" and label_noise > 0:
            noise = np.random.default_rng([seed, 1])  # its own stream: the words and the test split stay as without
            flipped = noise.random(rows) < label_noise
            labels = np.where(flipped, (labels + noise.integers(1, num_classes, size=rows)) % num_classes, labels)
        ends = np.cumsum(lengths)
        path = folder / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            for label, end, length in zip(labels.tolist(), ends.tolist(), lengths.tolist(), strict=True):
                review = drawn[end - length : end].tolist()
                title = " ".join(review[:3]) + ', "quoted"'
                writer.writerow([label + 1, title, " ".join(review[3:]) + "\\nsecond line, with a comma."])
    return folder
