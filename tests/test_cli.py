"""The `wippy` command, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WIPPY = [str(Path(sys.executable).with_name("wippy"))]  # the installed console script


def test_run_once_boots_a_node_and_prints_its_process_tree(tmp_path: Path) -> None:
    done = subprocess.run([*WIPPY, "run", "--once", "--root", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert f"running the app in {tmp_path}" in done.stdout
    assert "wippy:root" in done.stdout and "waiting" in done.stdout


def test_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    with subprocess.Popen(
        [*WIPPY, "run", "--root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "press Ctrl+C" in line:
                break
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping" in out and err == ""


def test_a_missing_root_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    done = subprocess.run([*WIPPY, "run", "--root", str(missing)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"--root {missing} is not a folder" in done.stderr


def test_no_command_prints_help_and_fails() -> None:
    done = subprocess.run(WIPPY, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "run" in done.stdout
