"""Lint the package the way a ROS build farm lints an ament_python package."""

from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ['scorehmr_ros', 'tests', 'benchmarks', 'setup.py']


def test_flake8_with_ament_settings():
    proc = subprocess.run([sys.executable, '-m', 'flake8', *TARGETS], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pydocstyle_with_ament_ignore_list():
    proc = subprocess.run([sys.executable, '-m', 'pydocstyle', 'scorehmr_ros'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
