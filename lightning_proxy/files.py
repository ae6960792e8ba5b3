"""Atomic file writes: every file the project writes is whole or absent, whatever kills the process."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def write_atomically(path: Path, write: Callable[[str], Any]) -> None:
    """``write(temporary name)`` then rename over ``path``: a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files a killed :func:`write_atomically` left in ``folder`` (not below it)."""
    found = sorted(Path(folder).glob(".*.tmp*")) if Path(folder).is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def write_npz(path: Path, metadata: dict[str, Any], **arrays: Any) -> Path:
    """Arrays and a JSON ``metadata`` string in one ``.npz``, readable with numpy alone."""
    import numpy as np

    text = np.array(json.dumps(metadata, sort_keys=True, default=str))
    write_atomically(path, lambda tmp: np.savez(tmp, **arrays, metadata=text))
    return path


def read_npz(path: Path, arrays: Sequence[str], what: str, hint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``arrays`` and the metadata of a :func:`write_npz` file; a missing one raises ``FileNotFoundError``
    (with ``hint``), a malformed or truncated one a ``ValueError``, each naming the file and ``what`` it should be."""
    import zipfile

    import numpy as np

    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist ({hint})")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {*arrays, "metadata"} - set(f.files)
            if missing:
                raise ValueError(f"it lacks the arrays {sorted(missing)}")
            return {name: f[name] for name in arrays}, json.loads(str(f["metadata"]))
    except (zipfile.BadZipFile, OSError, EOFError, json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path} is not a readable {what} (truncated or corrupt?): {err}") from err
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(
                f"{path} holds Python objects (a pickle), which are never loaded: write the {what} with plain arrays"
            ) from None
        raise ValueError(f"{path} is not a valid {what}: {err}") from err


def write_text(path: Path, text: str) -> Path:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=str))


def write_csv(path: Path, frame: Any) -> Path:
    """A pandas frame, without its index."""
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


def save_figure(fig: Any, path: Path, dpi: int = 120) -> Path:
    """A matplotlib figure in the format of ``path``'s suffix (PNG by default), then cleared."""
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    fig.clear()
    return path
