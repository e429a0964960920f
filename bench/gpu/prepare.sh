#!/usr/bin/env bash
# Run HERE (the CPU machine, with network to PyPI) before bench/gpu/run.sh goes to the GPU
# machine: downloads the wheels that machine's image lacks (pydantic and its dependencies:
# train/ and curate/shards/format.py import pydantic) into .whl/ (git-ignored), for its
# Python 3.12 on x86-64. Carry .whl along with the call: run(..., carry=[".whl"]).
# The versions are the ones this checkout's .venv runs (pyproject.toml's pins).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
rm -f .whl/*.whl
wheels=()
for pkg in pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  wheels+=("$pkg==$(version "$pkg")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${wheels[@]}"
ls -l .whl
