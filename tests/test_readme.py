"""Every command in the README's code blocks, as written, in a fresh folder; then the paths the README names.
The commands of docs/results.md that the README does not run, the same way.

A command that trains gets small overrides appended (one epoch, fewer methods or strategies), nothing else:
an edit of the README that breaks a command or renames an output fails here.
"""

import glob
import re
import shlex
from pathlib import Path

import pytest

from lightning_proxy.cli import check_training_args, main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"

TINY = "model.arch: preact_resnet8, trainer.max_epochs: 1"
# appended to a command by its first words: enough to run it quickly, never changing what it writes where
TEXT_TARGET = "trainer.max_epochs: 1, trainer.limit_train_batches: 2, trainer.limit_val_batches: 2"
ONE_EPOCH = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
OVERRIDES = {
    "coreset": [
        *("--methods", "[forgetting, random]", "--fractions", "[0.3]"),
        *("--proxy_args", f"{{{TINY}}}", "--target_args", f"{{{TINY}}}"),
    ],
    "active": [
        *("--methods", "[least_confidence]", "--selectors", "[proxy]", "--budgets", "[0.2]"),
        *("--proxy_args", f"{{{TINY}, trainer.limit_val_batches: 0}}", "--target_args", f"{{{TINY}}}"),
    ],
    "sweep": [
        *("--datasets", "{digits: {config: configs/sweep_digits_target.yaml, args: {trainer.max_epochs: 2}}}"),
        *("--grid", "{model.lr: [3.0e-2]}", "--strategies", "{epochs: [1]}"),
        *("--promote", "[{strategy: epochs-1, top: 0.5}]"),
    ],
    "fit --config configs/digits.yaml": ONE_EPOCH,
    "predict": ["--trainer.enable_progress_bar", "false"],
    "coreset --config configs/coreset_amazon_synthetic.yaml": [
        *("--methods", "[forgetting, kcenters]", "--fractions", "[0.3]"),
        *("--proxy_args", "{trainer.max_epochs: 1}", "--target_args", f"{{{TEXT_TARGET}}}"),
    ],
    "active --config configs/active_amazon_synthetic.yaml": [
        *("--methods", "[least_confidence]", "--budgets", "[0.2]"),
        *(
            "--proxy_args",
            "{trainer.max_epochs: 1, trainer.limit_val_batches: 0}",
            "--target_args",
            f"{{{TEXT_TARGET}}}",
        ),
    ],
    "coreset --config configs/coreset_mnist1d.yaml": [
        *("--methods", "[ccs, random]", "--fractions", "[0.3]", "--seeds", "[0]"),
        *("--proxy_args", "{trainer.max_epochs: 1}", "--target_args", "{trainer.max_epochs: 1}"),
    ],
    "coreset --config configs/coreset_debian_sections.yaml": [
        *("--methods", "[ccs, random]", "--fractions", "[0.3]", "--seeds", "[0]"),
        *("--proxy_args", "{trainer.max_epochs: 1, data.buckets: 1000}"),
        *("--target_args", f"{{{TEXT_TARGET}, data.buckets: 1000}}"),
    ],
    "distill": ["--iterations", "2", "--args", f"{{{TINY}}}", "--progress", "false"],
    "fit --config configs/sweep_digits_target.yaml": ONE_EPOCH,
}
PARSE_ONLY = ("imagenet",)  # needs the data set and 4+ GPUs: its config is resolved and printed, not trained
NOT_RUN_HERE = ("pip ", "pytest")  # .ci/run installs and tests exactly so
# minutes to hours each (a benchmark; .ci/run installs and runs the suite): the script must exist and define
# every option the line gives it
CHECKED_ONLY = ("python benchmarks/", ".ci/run")


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line number, language, code)`` of every fenced block."""
    return [
        (text[: m.start()].count("\n") + 2, m["lang"], m["code"])
        for m in re.finditer(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```$", text, re.M | re.S)
    ]


def shell_lines(code: str) -> list[str]:
    """The commands of a bash block: continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line for line in (shlex.join(shlex.split(raw, comments=True)) for raw in joined.splitlines()) if line]


def expand(words: list[str]) -> list[str]:
    """Glob patterns expanded as the shell does (sorted; left as written when nothing matches)."""
    out = []
    for word in words:
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") and "/" in word else []
        out += matches or [word]
    return out


def run_shell(line: str, capsys) -> None:
    words = expand(shlex.split(line))
    if words[0] != "lightning-proxy":
        assert line.startswith("--"), f"README: {line!r} is neither lightning-proxy nor a fragment of its options"
        check_training_args(words)  # a subset rule: keys, types, values and files, as the command checks them
        return
    args = words[1:]
    starts = [start for start in OVERRIDES if " ".join(args).startswith(start)]
    if starts:  # the most specific one
        args += OVERRIDES[max(starts, key=len)]
    if any(name in line for name in PARSE_ONLY):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--print_config"])
        assert exit_info.value.code == 0 and "class_path" in capsys.readouterr().out
        return
    main(args)


def check_script(line: str) -> None:
    words = shlex.split(line)
    script = ROOT / (words[1] if words[0] in ("python", "bash") else words[0])
    assert script.is_file(), f"{script.relative_to(ROOT)} does not exist"
    source = script.read_text()
    options = [word.split("=")[0] for word in words[1:] if word.startswith("--")]
    unknown = [option for option in options if f'"{option}"' not in source]
    assert not unknown, f"{script.relative_to(ROOT)} defines no {unknown}"


def run_blocks(text: str, name: str, capsys, skip=frozenset(), languages=("bash", "python")) -> int:
    """Runs the document's code blocks in order (bash lines in ``skip`` left out); how many ran or were checked."""
    ran = 0
    for line_number, language, code in code_blocks(text):
        where = f"{name} line {line_number}"
        if language not in languages:
            continue
        if language == "bash":
            for line in shell_lines(code):
                if line.startswith(NOT_RUN_HERE) or line in skip:
                    continue
                try:
                    if line.startswith(CHECKED_ONLY):
                        check_script(line)
                    else:
                        run_shell(line, capsys)
                except BaseException as error:
                    raise AssertionError(f"{where}: {line}\nfailed with {error!r}") from error
                ran += 1
        elif language == "python":
            try:
                exec(compile(code, where, "exec"), {"__name__": "readme"})
            except BaseException as error:
                raise AssertionError(f"{where}: the Python example failed with {error!r}") from error
            ran += 1
    return ran


def named_paths(text: str) -> list[str]:
    """Glob patterns of what the README says the commands write: every backticked ``runs/...`` path and the
    files listed under each "It writes into `runs/X/`:"."""
    general = {
        re.sub(r"<[^>]+>", "*", re.sub(r"epoch=\d+-step=\d+", "epoch=*-step=*", p))
        for p in re.findall(r"`(runs/[^`\s]+)`", text)
    }
    for folder, listing in re.findall(r"It writes into `(runs/[^`]+)`:\n\n((?:(?:- |  ).*\n)+)", text):
        tokens = list(re.finditer(r"`([^`\s]+)`", listing))
        for i, token in enumerate(tokens):
            name = token[1]
            if "." not in name and "/" not in name:
                continue  # a column or option named in the listing, not a file
            if name.startswith("."):  # `x.png` / `.csv`: the same stem; `as .npy`: some file of that kind
                previous = tokens[i - 1]
                between = listing[previous.end() : token.start()]
                name = Path(previous[1]).stem + name if between.strip() == "/" else "*" + name
            general.add(f"{folder.rstrip('/')}/**/{name}")
    return sorted(general)


def test_every_readme_command_runs_as_written_and_writes_what_it_names(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    text = README.read_text()
    ran = run_blocks(text, "README.md", capsys)
    assert ran >= 15, f"only {ran} README commands found: has the README's layout changed?"

    missing = [p for p in named_paths(text) if not glob.glob(p, recursive=True)]
    assert not missing, f"the README names paths its commands did not write: {missing}"


def test_every_results_command_runs_as_written(tmp_path, monkeypatch, capsys):
    """The code blocks of docs/results.md, with the README's overrides, except the lines the README runs. The
    Debian descriptions come from this machine's package index (a script only checked here): synthetic reviews
    in the same release format stand in for them."""
    from lightning_proxy.datamodules.text import write_synthetic_reviews

    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    write_synthetic_reviews(tmp_path / "data" / "debian_sections", "full", train_rows=200, test_rows=50)
    blocks = code_blocks(README.read_text())
    in_readme = {line for _, language, code in blocks if language == "bash" for line in shell_lines(code)}
    ran = run_blocks(RESULTS.read_text(), "docs/results.md", capsys, skip=in_readme)
    assert ran >= 1, "no command of docs/results.md found beyond the README's: has its layout changed?"


def test_named_paths_reads_listings_and_placeholders():
    text = (
        "see `runs/a/<strategy>/x.json` and `runs/b/checkpoints/epoch=14-step=180/`.\n"
        "It writes into `runs/c/`:\n\n- `r.csv`: rows;\n- `f.png` / `.csv`: figure;\n"
        "- folders (`seed0/p`) with\n  `state.json` (its `rounds`) and the sets as `.npy`.\n\nAfter.\n"
    )
    assert named_paths(text) == sorted(
        [
            "runs/a/*/x.json",
            "runs/b/checkpoints/epoch=*-step=*/",
            "runs/c/",
            "runs/c/**/r.csv",
            "runs/c/**/f.png",
            "runs/c/**/f.csv",
            "runs/c/**/seed0/p",
            "runs/c/**/state.json",
            "runs/c/**/*.npy",
        ]
    )
