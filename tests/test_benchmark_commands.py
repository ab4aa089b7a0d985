"""Measured commands: a child's peak memory is its own, not the benchmark process's it was forked from."""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.commands import HEAVY, NOTABLE, modules_loaded, run_measured


def test_peak_rss_is_the_commands_own_even_from_a_big_parent() -> None:
    ballast = np.ones(300 * 2**20 // 8)  # 300 MB resident in this process
    ballast[::512] = 2.0  # touched: resident, not just reserved

    small = run_measured([sys.executable, "-c", "pass"])
    big = run_measured(
        [sys.executable, "-c", "import numpy; x = numpy.ones(200 * 2**20 // 8); print(x.sum())"]
    )

    assert small.returncode == 0 and small.peak_rss_mb < 100
    assert big.returncode == 0 and big.stdout.strip() == str(float(200 * 2**20 // 8))
    assert 200 <= big.peak_rss_mb < 300 + 100  # its 200 MB array, not this process's 300 MB on top
    assert ballast.sum() > 0


def test_exit_code_output_and_a_timeout() -> None:
    failed = run_measured([sys.executable, "-c", "import sys; print('out'); sys.exit('bad input')"])
    assert (failed.returncode, failed.stdout, failed.stderr.strip()) == (1, "out\n", "bad input")
    cut = run_measured([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=1)
    assert cut.returncode == -9 and "killed after" in cut.stderr


def test_the_module_probe_reports_after_an_import_and_after_a_failing_command() -> None:
    for args in (None, ["study", "no-such-command"]):  # the usage error's SystemExit is caught
        loaded = modules_loaded(args)
        assert set(loaded) == {"heavy", "notable"}
        assert set(loaded["heavy"]) <= set(HEAVY) and set(loaded["notable"]) <= set(NOTABLE)
        assert "pydantic" in loaded["notable"]  # the run config is a pydantic model, read by every command
