"""The layer ships byte-compiled for the Lambda runtime: CPython 3.12 on arm64.

Lambda's /opt is read-only, so a layer without .pyc files is compiled again on every cold start.
`sam build` (no Docker) runs the top-level Makefile's build-ChangeGuardLayer; this builds the layer
into a temporary directory and checks what would be deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM = ROOT / ".venv-sam" / "bin" / "sam"
ENV = {**os.environ, "PYENV_VERSION": "3.12.1:3.11.7", "SAM_CLI_TELEMETRY": "0"}
EM_AARCH64 = 0xB7  # ELF e_machine of AArch64

# Run by python3.12 over the built layer: every .py has a 3.12 .pyc that never checks its source
# (unchecked-hash) and was compiled from exactly the shipped source; no .pyc of another version.
_CHECK_PYC = r"""
import importlib.util, json, pathlib, sys
layer = pathlib.Path(sys.argv[1])
report = {"sources": 0, "compiled": 0, "bad": [], "foreign": []}
for source in layer.rglob("*.py"):
    report["sources"] += 1
    cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
    if not cached.exists():
        report["bad"].append(f"{source}: no {cached.name}")
        continue
    data = cached.read_bytes()
    flags = int.from_bytes(data[4:8], "little")
    if data[:4] != importlib.util.MAGIC_NUMBER:
        report["bad"].append(f"{cached}: magic {data[:4]!r}")
    elif flags != 0b01:
        report["bad"].append(f"{cached}: flags {flags} (not unchecked-hash)")
    elif data[8:16] != importlib.util.source_hash(source.read_bytes()):
        report["bad"].append(f"{cached}: stale")
    else:
        report["compiled"] += 1
tag = sys.implementation.cache_tag
report["foreign"] = [str(p) for p in layer.rglob("*.pyc") if f".{tag}." not in p.name]
print(json.dumps(report))
"""


def _python312() -> str | None:
    found = shutil.which("python3.12", path=ENV.get("PATH"))
    if found is None:
        return None
    proc = subprocess.run([found, "--version"], env=ENV, capture_output=True, text=True, check=False)
    return found if proc.returncode == 0 and proc.stdout.startswith("Python 3.12") else None


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _python312() is None:
        pytest.skip("python3.12 is not available (the layer is byte-compiled for the Lambda runtime's Python 3.12)")
    out = tmp_path_factory.mktemp("sam")
    proc = subprocess.run(
        [str(SAM), "build", "ChangeGuardLayer", "--build-dir", str(out / "build"), "--cache-dir", str(out / "cache")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "build" / "ChangeGuardLayer" / "python"


@pytest.mark.slow
def test_the_layer_is_byte_compiled_for_python_3_12(built_layer):
    python312 = _python312()
    assert python312 is not None
    proc = subprocess.run(
        [python312, "-c", _CHECK_PYC, str(built_layer)], env=ENV, capture_output=True, text=True, check=True
    )
    report = json.loads(proc.stdout)
    assert report["sources"] > 100 and report["compiled"] == report["sources"], report["bad"][:10]
    assert report["foreign"] == []
    assert list((built_layer / "changeguard").rglob("__init__.cpython-312.pyc"))


@pytest.mark.slow
def test_the_layer_holds_the_aarch64_extensions_and_nothing_the_runtime_provides(built_layer):
    (native,) = built_layer.glob("pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so")
    header = native.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64
    assert not list(built_layer.rglob("*x86_64*.so"))
    top = {p.name for p in built_layer.iterdir()}
    assert {"changeguard", "aws_lambda_powertools", "pydantic", "pydantic_core"} <= top
    assert not top & {"boto3", "botocore", "bin"}  # boto3 comes with the runtime; no console scripts
    # Packages keep their metadata (version lookups) but not the install's bookkeeping or tests.
    assert list(built_layer.glob("aws_lambda_powertools-*.dist-info/METADATA"))
    assert not list(built_layer.rglob("*.dist-info/RECORD"))
    assert not [p for p in built_layer.rglob("tests") if p.is_dir()]
    assert not list(built_layer.glob("changeguard*.egg-info"))
