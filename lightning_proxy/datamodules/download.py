"""Download helpers and the error a datamodule raises when its files are not where it looks."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import download_and_extract_archive


def download_and_verify(url: str, root: str | Path, md5: str | None = None, remove_archive: bool = True) -> None:
    """Download ``url`` into ``root`` and extract it there, checking the archive's md5 when one is given.

    Without a checksum torchvision trusts any file already at the archive's path, so a leftover from an
    interrupted download is removed first; a failed download or extraction removes the archive too.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / os.path.basename(urlparse(url).path)
    if md5 is None:
        archive.unlink(missing_ok=True)
    try:
        download_and_extract_archive(url, download_root=str(root), md5=md5, remove_finished=remove_archive)
    except Exception as error:
        archive.unlink(missing_ok=True)
        checksum = f" (md5 {md5})" if md5 else ""
        raise RuntimeError(
            f"could not download, verify or extract {url} into {root.absolute()} ({error}); without internet "
            f"access, download it elsewhere{checksum} and extract it into {root.absolute()}"
        ) from error


def missing_dataset_error(name: str, path: str | Path, layout: str, how_to_get: str) -> FileNotFoundError:
    """A ``FileNotFoundError`` saying which path was looked at, what should be there and how to get it."""
    layout = textwrap.indent(textwrap.dedent(layout).strip("\n"), "    ")
    return FileNotFoundError(
        f"{name}: {Path(path).absolute()} does not exist.\nExpected layout:\n{layout}\nTo get it: {how_to_get}"
    )
