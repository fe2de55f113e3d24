#!/usr/bin/env bash
# Usage: scripts/install_overlay_venv.sh DIR PACKAGE...
# Make a venv at DIR that sees every package of the calling Python (a venv or not), then install
# PACKAGE... into DIR over them. For frameworks whose pins clash with the main environment
# (verifiers pins mcp<2, verl pins transformers 5.10): their pins win inside DIR only.
set -euo pipefail
dir=$1; shift
python=${PYTHON:-python}
"$python" -m venv "$dir"
parent=$("$python" -c 'import site; print(site.getsitepackages()[0])')
child=$("$dir/bin/python" -c 'import site; print(site.getsitepackages()[0])')
# An `import` line in a .pth file runs at start-up: addsitedir also reads the parent's own .pth
# files (editable installs), and appends, so DIR's packages come first.
echo "import site; site.addsitedir('$parent')" > "$child/_dreamgym_parent_env.pth"
"$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
