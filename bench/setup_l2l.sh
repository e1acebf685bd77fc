#!/usr/bin/env bash
# Make bench/.venv-l2l: a separate venv with learn2learn 0.2.0, for bench/learners.py only.
#
# Why separate: learn2learn pulls qpth (numpy<2) and gym; neither may enter the project's venv.
# Why by hand: `pip install learn2learn` fails on Python 3.11 (`longintrepr.h: No such file`, its
# sdist ships C files made by an old Cython, learn2learn#413).  Regenerating them with `cython -3`
# and installing with --no-build-isolation works.
# torch/torchvision are borrowed from the project's venv through a .pth file placed *after* this
# venv's own site-packages (so numpy<2 here wins): the same torch build is compared, and no second
# multi-GB torch download is needed.
#
# Usage:  bash bench/setup_l2l.sh [PROJECT_VENV]       (default: .venv of this repo)
# Then:   bench/.venv-l2l/bin/python -m bench.learners
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
project_venv="${1:-$root/.venv}"
venv="$here/.venv-l2l"
python="$("$project_venv/bin/python" -c 'import sys; print(sys._base_executable)')"

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" "numpy<2" "cython>=3" setuptools wheel scipy tqdm requests pillow "gym==0.26.2"
# qpth is imported by learn2learn.optim only; --no-deps keeps cvxpy & co. out.
"${pip[@]}" --no-deps qpth

project_site="$("$project_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
venv_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$project_site" > "$venv_site/zz_project_torch.pth"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip download --quiet --no-deps --no-binary :all: learn2learn==0.2.0 -d "$work"
tar -xzf "$work"/learn2learn-0.2.0.tar.gz -C "$work"
src="$work/learn2learn-0.2.0"
find "$src/learn2learn" -name '*.pyx' -print0 | xargs -0 -n1 "$venv/bin/cython" -3
"$venv/bin/python" -m pip install --quiet --no-build-isolation --no-deps "$src"

"$venv/bin/python" - <<'EOF'
import learn2learn, numpy, torch
print(f"learn2learn {learn2learn.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")
EOF
