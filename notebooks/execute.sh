#!/usr/bin/env bash
# Executes notebooks/sweep_analysis.ipynb headless on a sweep's results directory and checks
# that it wrote its figures.
#
#   notebooks/execute.sh RESULTS_DIR [OUT_DIR]
#
# OUT_DIR (default RESULTS_DIR/notebook_figures) receives the PNG files and the executed
# notebook, sweep_analysis.executed.ipynb. The interpreter is ${PYTHON:-python3}; when it is
# missing or lacks the packages of notebooks/requirements.txt, the script prints one line and
# exits 0, or 1 when CALM_NOTEBOOK_REQUIRED=1.
set -euo pipefail

usage() {
    echo "usage: $0 RESULTS_DIR [OUT_DIR]" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
notebook="$here/sweep_analysis.ipynb"
py="${PYTHON:-python3}"

absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}
results="$(absolute "$1")"
out="$(absolute "${2:-$results/notebook_figures}")"

skip() {
    echo "notebook: skipped: $1 (pip install -r notebooks/requirements.txt)"
    if [ "${CALM_NOTEBOOK_REQUIRED:-0}" = 1 ]; then
        exit 1
    fi
    exit 0
}

if ! command -v "$py" >/dev/null 2>&1; then
    skip "no python at '$py'"
fi
missing="$("$py" - <<'PY' 2>/dev/null
import importlib.util
names = ["nbclient", "nbformat", "pandas", "matplotlib", "ipykernel"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PY
)" || skip "'$py' does not run"
if [ -n "$missing" ]; then
    skip "'$py' lacks ${missing// /, }"
fi

mkdir -p "$out"
# Only figures written by this execution pass the check below.
marker="$(mktemp)"
trap 'rm -f "$marker"' EXIT

echo "notebook: executing $notebook on $results"
CALM_RESULTS="$results" CALM_NOTEBOOK_OUT="$out" \
    "$py" - "$notebook" "$here" "$out/sweep_analysis.executed.ipynb" <<'PY'
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

source, cwd, executed = sys.argv[1:4]
nb = nbformat.read(source, as_version=4)
client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": cwd}})
try:
    client.execute()
except CellExecutionError as e:
    nbformat.write(nb, executed)
    print(e, file=sys.stderr)
    print(f"notebook: failed: {e.ename}: {e.evalue} (executed notebook: {executed})", file=sys.stderr)
    sys.exit(1)
nbformat.write(nb, executed)
print(f"notebook: executed, outputs in {executed}")
PY

written() {
    find "$out" -maxdepth 1 -type f -name "$1" -size +0 -newer "$marker" | sort
}
status=0
if [ -z "$(written learning_curves.png)" ]; then
    echo "notebook: failed: it wrote no learning_curves.png in $out" >&2
    status=1
fi
if [ -z "$(written 'metric_*.png')" ]; then
    echo "notebook: failed: it wrote no metric_*.png in $out" >&2
    status=1
fi
[ $status -eq 0 ] || exit $status
echo "notebook: figures:" $(written '*.png' | xargs -n1 basename)
