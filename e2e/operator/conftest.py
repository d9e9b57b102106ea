"""Fixtures of the operator tests: paths to the binaries, helm, and the repository."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "e2e" / ".tools" / "bin"


def target_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def operator_bin() -> pathlib.Path:
    p = target_dir() / "portcullis-operator"
    assert p.exists(), f"{p} missing: run `cargo build -p portcullis-operator --bins` first"
    return p


@pytest.fixture(scope="session")
def proxy_bin() -> pathlib.Path:
    p = target_dir() / "portcullis-proxy"
    assert p.exists(), f"{p} missing: run `cargo build -p portcullis-proxy --bins` first"
    return p


@pytest.fixture(scope="session")
def helm() -> pathlib.Path:
    p = TOOLS / "helm"
    if not p.exists():
        subprocess.run([str(ROOT / "e2e" / "operator" / "install-helm.sh")], check=True)
    assert shutil.which(str(p)), p
    return p
