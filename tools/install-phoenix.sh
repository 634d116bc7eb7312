#!/usr/bin/env bash
# Installs Arize Phoenix, the real OTLP trace backend that tests/tracing starts, into its own
# venv at .tools/phoenix (its ~140 pinned packages would clash with the project's .venv).
#
# License: arize-phoenix is Elastic-2.0 (source-available, not OSI-approved). It is a test
# tool only: it is never shipped in the image, the chart or any release artifact.
#
# Reproducible: tools/phoenix.lock pins every package with its hashes, resolved by the
# project's uv from tools/phoenix.txt by `make lock`.
# Idempotent: a stamp keyed on the lock's hash skips the install once it is done.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
venv=.tools/phoenix
lock=tools/phoenix.lock

hash=$(sha256sum "$lock" | cut -d' ' -f1)
stamp=$venv/.installed-$hash
if [ -f "$stamp" ] && [ -x "$venv/bin/phoenix" ]; then
  exit 0
fi

echo "installing Arize Phoenix for the trace tests (~1 min, once) into $venv"
start=$SECONDS
rm -rf "$venv"
"${PYTHON:-python3}" -m venv "$venv"
"$uv" pip install --quiet --python "$venv/bin/python" --require-hashes -r "$lock"
touch "$stamp"
echo "Arize Phoenix $("$venv/bin/python" -c 'import phoenix; print(phoenix.__version__)') in $venv" \
  "($((SECONDS - start)) s, $(du -sh "$venv" | cut -f1))"
