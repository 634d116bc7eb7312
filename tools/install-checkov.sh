#!/usr/bin/env bash
# Installs checkov into its own venv at .tools/checkov: its dependency pins conflict
# with the project's (pytest among them), so it cannot live in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.3.30
venv=.tools/checkov
if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$version"
echo "checkov $("$venv/bin/checkov" --version) in $venv"
