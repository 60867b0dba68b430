"""Builds killed with -9 (issue 19, item 6) leave their `.NAME.*.partial` stage behind; the next build of the same
destination sweeps it. It never touches the stage of a build still running (each build holds a flock on its
stage's lock file; the kernel drops it when the process dies), nor another destination's stages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from votive.builders.output import UNLOCKED_STAGE_AGE_S, staged_output, sweep_stale_stages

REPO = Path(__file__).resolve().parents[2]

# A build that writes a file into its stage, says so, then waits to be killed.
_BUILD = '''
import sys, time
from pathlib import Path
from votive.builders.output import staged_output
with staged_output(Path(sys.argv[1])) as stage:
    (stage / "weights.bin").write_bytes(b"x" * 4096)
    print("ready", flush=True)
    time.sleep(600)
'''


def _start_build(dest: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _BUILD, str(dest)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def _stages(parent: Path, name: str) -> list[Path]:
    return sorted(p for p in parent.glob(f".{name}.*.partial") if p.is_dir())


def _build(dest: Path) -> None:
    with staged_output(dest, force=True) as stage:
        (stage / "manifest.json").write_text('{"format": "votive-build/1"}')


def test_the_next_build_sweeps_the_stages_of_killed_builds(tmp_path):
    dest = tmp_path / "out"
    for _ in range(3):
        child = _start_build(dest)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert len(_stages(tmp_path, "out")) == 1  # each build swept the one killed before it
    _build(dest)
    assert _stages(tmp_path, "out") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock files left either


def test_a_running_builds_stage_is_kept(tmp_path):
    dest = tmp_path / "out"
    live = _start_build(dest)
    try:
        (live_stage,) = _stages(tmp_path, "out")
        _build(dest)  # a second build of the same destination, while the first still runs
        assert _stages(tmp_path, "out") == [live_stage] and (live_stage / "weights.bin").exists()
        assert sweep_stale_stages(dest) == []
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    assert sweep_stale_stages(dest) == [live_stage]


def test_other_destinations_and_recent_unlocked_stages_are_left_alone(tmp_path):
    for name in (".other.abcdefgh.partial", ".out.v1.abcdefgh.partial", ".out.recent00.partial",
                 ".out.old00000.partial"):
        (tmp_path / name).mkdir()
    (tmp_path / ".other.abcdefgh.partial.lock").touch()  # unlocked: stale, but not this destination's
    (tmp_path / ".out.v1.abcdefgh.partial.lock").touch()
    old = time.time() - UNLOCKED_STAGE_AGE_S - 60
    os.utime(tmp_path / ".out.old00000.partial", (old, old))  # from before lock files, and old
    _build(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        ".other.abcdefgh.partial", ".out.recent00.partial", ".out.v1.abcdefgh.partial", "out"]
