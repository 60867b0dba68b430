"""The README's first command ends in `votive demo`: it must serve the real model and answer a real request."""

from __future__ import annotations

import subprocess
import sys


def test_demo_serves_minilm_and_answers_over_http():
    proc = subprocess.run(
        [sys.executable, "-m", "votive.cli", "demo", "--exit", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "HTTP 200: 2 embeddings of 384 floats from sentence-transformers/all-MiniLM-L6-v2" in proc.stdout
    cosine = float(proc.stdout.rsplit("cosine between the two sentences ", 1)[1].split()[0])
    assert 0.5 < cosine < 1.0  # two paraphrases: similar, not identical


def test_demo_with_a_missing_model_is_one_line_and_nonzero():
    proc = subprocess.run(
        [sys.executable, "-m", "votive.cli", "demo", "/nonexistent/model", "--exit", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("votive: error: ") and proc.stderr.count("\n") == 1, proc.stderr
