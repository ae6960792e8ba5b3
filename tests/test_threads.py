import os
import subprocess
import sys

import pytest

from lightning_proxy.threads import ENV, policy_threads

PROBE = (
    "import os; from lightning_proxy.threads import apply_thread_policy; apply_thread_policy(); "
    "import torch; print(torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS'))"
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, 1),
        ({ENV: "3"}, 3),
        ({ENV: "3", "OMP_NUM_THREADS": "2"}, 3),
        ({"OMP_NUM_THREADS": "2"}, None),
        ({ENV: "auto"}, None),
    ],
)
def test_policy_reads_the_environment(environ, expected):
    assert policy_threads(environ) == expected


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_malformed_setting_is_one_clear_error(value):
    with pytest.raises(ValueError, match=f"{ENV}='{value}' from the environment: give a positive number"):
        policy_threads({ENV: value})


def _probe(**environ: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "OMP_NUM_THREADS")} | environ
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout


def test_the_policy_reaches_torch_and_the_processes_started_after_it():
    assert _probe().split() == ["1", "1"]  # the default: one thread, written for child processes
    assert _probe(**{ENV: "2"}).split() == ["2", "2"]
    assert _probe(OMP_NUM_THREADS="2").split() == ["2", "2"]  # the user's own setting is kept


def test_the_command_refuses_a_bad_setting_in_one_line():
    env = dict(os.environ, **{ENV: "none"})
    run = subprocess.run(
        [sys.executable, "-m", "lightning_proxy.cli", "--help"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"lightning-proxy: error: {ENV}='none' from the environment: give a positive number of threads, or 'auto'"
    ]
