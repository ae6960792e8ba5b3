"""Bad input as one clear line: what was wrong, where it came from, how to fix it.

Imports nothing heavy, so the command line can check what it can before Lightning is imported.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "LIGHTNING_PROXY_DEBUG"

# what a user's input can cause; anything else is a bug and keeps its traceback
USER_ERRORS: tuple[type[BaseException], ...] = (
    argparse.ArgumentError,
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    ModuleNotFoundError,  # an optional package: the message names the extra that installs it
    ConnectionError,  # a database that does not answer: the message names it and what to do
)


def wants_traceback(argv: list[str]) -> bool:
    """``--debug`` on the command line or ``LIGHTNING_PROXY_DEBUG`` set (not 0): show tracebacks."""
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def fail(prog: str, message: str, code: int = 1) -> None:
    """Print ``prog: error: message`` as the last thing on stderr and exit with ``code``."""
    sys.stdout.flush()
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def user_message(
    error: BaseException, known: Callable[[], list[str]] | None = None, argv: list[str] | None = None
) -> str:
    """The message of a user error; a parser's error reduced to its key and what was wrong, with the nearest
    of the ``known`` option names (called only for an unknown option) as a suggestion, and the config file
    in ``argv`` that holds the key when the command line itself does not."""
    if not isinstance(error, argparse.ArgumentError):
        return str(error) or type(error).__name__
    key, what = explain(error)
    if found := re.fullmatch(r"unrecognized arguments: --([\w.]+)(?:[= ].*)?", what):
        key, what = found[1], "is not an option"
    if what == "is not an option":
        hint = suggestion(key, known(), "") if known else ""
        source = config_holding(key, argv or [])
        if source is not None:
            return f"{key} in {source} is not an option{hint}"
        return f"--{key} is not an option" + hint.replace("did you mean ", "did you mean --")
    return f"{key}: {what}" if key else what


def config_holding(key: str, argv: list[str]) -> str | None:
    """The last ``--config`` file in ``argv`` that sets ``key`` (dotted; ``init_args`` levels skipped), if the
    command line does not set it itself."""
    import yaml

    if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv):
        return None
    found = None
    for flag, path in zip(argv, argv[1:], strict=False):
        if flag not in ("-c", "--config"):
            continue
        try:
            config = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        node: object = config
        for part in key.split("."):
            if isinstance(node, dict) and isinstance(node.get("init_args"), dict) and part not in node:
                node = node["init_args"]
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            found = path
    return found


_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Problem with given class_path", "Given value type:")


def explain(error: Exception) -> tuple[str, str]:
    """``(key, what is wrong)`` from a jsonargparse error, without its union-type dump.

    A nested error names its key piece by piece (``Parser key "data":`` ... ``Parser key "subset.fraction":``);
    the first line that is neither a key nor part of the dump says what was wrong.
    """
    keys: list[str] = []
    for raw in str(error).splitlines():
        line = raw.strip().removeprefix("- ").strip()
        if not line or line.startswith(_NOISE) or line.startswith("Given value:"):
            continue
        if found := re.fullmatch(r'Parser key "([^"]+)":', line):
            keys.append(found[1])
            continue
        if found := re.fullmatch(r"Group '([\w.]+)' does not accept (?:nested key|option) '([\w.]+)'", line):
            return ".".join([*keys, found[1], found[2]]), "is not an option"
        if found := re.fullmatch(r"[Ss]ubcommand '\w+' does not accept (?:nested key|option) '([\w.]+)'", line):
            return ".".join([*keys, found[1]]), "is not an option"
        if found := re.fullmatch(r"Option '([\w.]+)' is not accepted", line):
            return ".".join([*keys, found[1]]), "is not an option"
        what = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", line)
        return ".".join(keys), what[0].lower() + what[1:]
    return ".".join(keys), str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def suggestion(key: str, known: list[str], prefix: str = "") -> str:
    """``; did you mean trainer.max_epochs?`` for a key that is a typo of a known one (a key known to another
    datamodule, such as an image option given to a text pool, is no typo)."""
    close = difflib.get_close_matches(key, [k for k in known if k != key], n=1, cutoff=0.8)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
