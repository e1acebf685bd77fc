#!/usr/bin/env bash
# Reproduce the rows of results/README.md: Conv-4 baselines and searched backbones on
# the minimal Omniglot sets, and the same pipeline on glyphs and sinusoid.
#
#   bash bench/reproduce.sh OMNIGLOT_ROOT [ROW ...]     # no ROW: every row, one after another
#   bash bench/reproduce.sh --list                      # the row names
#   .venv/bin/python -m bench.results_table --write     # results/README.md from the records
#
# OMNIGLOT_ROOT holds images_background_small1/ and images_background_small2/ (unzipped).
# Each row runs on ONE CPU thread (OMP_NUM_THREADS=1), so two rows can share a 2-core machine:
#   bash bench/reproduce.sh ROOT rowA rowB & bash bench/reproduce.sh ROOT rowC rowD & wait
# Every row appends its command, seed, its last output lines and its CPU and wall time to
# results/reproduce/<row>.log (OUT=DIR elsewhere); studies, weights and exports go there too (git-ignored).
# Its figures go to its committed record, results/records/reproduce/<row>.json.
#
# The protocol, the same for every Omniglot row: lake split of the minimal sets (seed 0: the test
# alphabets are held out from training, validation and search), queries 5 per class, meta-batch 4,
# 200 meta-training steps (searched candidates: the quick preset's 80), 600 test episodes, 95% CI.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-$root/.venv/bin/python}"
out="${OUT:-$root/results/reproduce}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ITER="${ITER:-200}"      # meta-training steps of baselines and retrains
LONG="${LONG:-1000}"     # the *-long rows: is a gap at ITER steps still there after LONG?
PRESET="${PRESET:-quick}"  # smoke: a seconds-long check of this script
SEED=0

rows=(
  conv4-protonet-5w1s conv4-protonet-5w5s conv4-protonet-20w1s conv4-protonet-20w1s-within conv4-protonet-20w5s
  conv4-maml-5w1s conv4-maml-5w5s conv4-maml-20w1s conv4-maml-20w1s-within conv4-maml-20w5s
  search-protonet-chain search-protonet-cell search-maml-chain search-maml-cell
  glyphs-conv4-protonet glyphs-resnet12-protonet glyphs-search-protonet-chain
  sinusoid-mlp40-maml-5shot sinusoid-mlp40-maml-10shot sinusoid-search-maml-5shot sinusoid-search-maml-10shot
  conv4-maml-5w1s-long search-maml-chain-long
)

if [[ "${1:-}" == "--list" ]]; then printf '%s\n' "${rows[@]}"; exit 0; fi
if [[ $# -lt 1 || ! -d "$1" ]]; then
  echo "usage: bash bench/reproduce.sh OMNIGLOT_ROOT [ROW ...]  (OMNIGLOT_ROOT: a folder, got '${1:-}')" >&2
  exit 2
fi
omniglot="$(cd "$1" && pwd)"
shift
selected=("$@")
[[ ${#selected[@]} -eq 0 ]] && selected=("${rows[@]}")
mkdir -p "$out"


omni=(--dataset omniglot --data-root "$omniglot")

# run ROW COMMAND...: log the command, its output's last lines, and its time.
run() {
  local row="$1"; shift
  local log="$out/$row.log" t0 t1
  {
    echo "row: $row"
    echo "seed: $SEED"
    echo "command: $*"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1); $(grep -o -m1 'avx512f' /proc/cpuinfo || echo 'no AVX-512'); $(nproc --all) cores"
  } > "$log.partial"
  t0=$(date +%s)
  # CPU seconds of the command (user + sys) from GNU time; the output's last lines hold the result.
  /usr/bin/time -f "cpu_seconds: %U %S" -o "$log.time" "$@" > "$log.out" 2>&1
  t1=$(date +%s)
  tail -n 40 "$log.out" >> "$log.partial"
  awk '{printf "cpu_seconds: %.0f\n", $2 + $3}' "$log.time" >> "$log.partial"
  echo "wall_seconds: $((t1 - t0))" >> "$log.partial"
  mv "$log.partial" "$log"
  rm -f "$log.time"
  # The row's committed record (results/records/reproduce/ROW.json), which results/README.md is built from.
  (cd "$root" && "$py" -m bench.results_table record "$out" "$row" --omniglot-root "$omniglot" > /dev/null)
  echo "$row: done in $((t1 - t0)) s ($log)"
}

baseline() {  # baseline ROW ALGO WAYS SHOTS [extra evaluate options]
  local row="$1" algo="$2" ways="$3" shots="$4"; shift 4
  run "$row" "$py" "$root/cli.py" evaluate conv4 --algo "$algo" --ways "$ways" --shots "$shots" \
    --iterations "$ITER" --preset "$PRESET" "${omni[@]}" --seed "$SEED" --cache-dir "$out/cache" "$@"
}

searched() {  # searched ROW ALGO SPACE TRIALS SEARCH-OPTIONS...: search, analyze, export --retrain
  local row="$1" algo="$2" space="$3" trials="$4"; shift 4
  local q_py q_cli q_out opts export_root=""
  q_py=$(printf %q "$py"); q_cli=$(printf %q "$root/cli.py"); q_out=$(printf %q "$out")
  opts=""  # printf '%q ' with no arguments would print '' (an empty argument)
  [[ $# -gt 0 ]] && opts=$(printf '%q ' "$@")
  [[ " $* " == *" --data-root "* ]] && export_root="--data-root $(printf %q "$omniglot")"
  run "$row" bash -c "set -e
    $q_py $q_cli search --space $space --algo $algo --preset $PRESET --trials $trials --sampler tpe --cache-dir $q_out/cache $opts --results-dir $q_out --seed $SEED --study $row
    $q_py $q_cli analyze --study $row --results-dir $q_out
    $q_py $q_cli export --study $row --results-dir $q_out --retrain --iterations $ITER --cache-dir $q_out/cache $export_root"
}

for row in "${selected[@]}"; do
  case "$row" in
    conv4-protonet-*w*s|conv4-maml-*w*s)  # conv4-ALGO-<ways>w<shots>s, trained here
      [[ "$row" =~ ^conv4-([a-z]+)-([0-9]+)w([0-9]+)s$ ]] || { echo "bad row '$row'" >&2; exit 2; }
      algo="${BASH_REMATCH[1]}" ways="${BASH_REMATCH[2]}" shots="${BASH_REMATCH[3]}"
      save=()  # the 20-way 1-shot weights are tested again within alphabets
      [[ "$ways$shots" == "201" ]] && save=(--save-weights "$out/conv4-$algo-20w1s.pt")
      baseline "$row" "$algo" "$ways" "$shots" "${save[@]}" ;;
    conv4-protonet-20w1s-within|conv4-maml-20w1s-within)
      algo="${row#conv4-}"; algo="${algo%%-*}"
      run "$row" "$py" "$root/cli.py" evaluate conv4 --algo "$algo" --ways 20 --shots 1 "${omni[@]}" \
        --seed "$SEED" --cache-dir "$out/cache" --within-alphabet --preset "$PRESET" --weights "$out/conv4-$algo-20w1s.pt" ;;
    search-protonet-chain) searched "$row" protonet chain 12 "${omni[@]}" ;;
    search-protonet-cell)  searched "$row" protonet cell 12 "${omni[@]}" ;;
    search-maml-chain)     searched "$row" maml chain 8 "${omni[@]}" ;;
    search-maml-cell)      searched "$row" maml cell 8 "${omni[@]}" ;;
    glyphs-conv4-protonet)
      run "$row" "$py" "$root/cli.py" evaluate conv4 --algo protonet --iterations "$ITER" --preset "$PRESET" --seed "$SEED" \
        --cache-dir "$out/cache" ;;
    glyphs-resnet12-protonet)  # the few-shot ResNet-12 beside Conv-4, same budget
      run "$row" "$py" "$root/cli.py" evaluate resnet12 --algo protonet --iterations "$ITER" --preset "$PRESET" \
        --seed "$SEED" --cache-dir "$out/cache" ;;
    sinusoid-mlp40-maml-5shot|sinusoid-mlp40-maml-10shot)  # MAML's 40-40 network beside the searched MLP
      shots="${row#sinusoid-mlp40-maml-}"; shots="${shots%shot}"
      run "$row" "$py" "$root/cli.py" evaluate mlp40 --algo maml --dataset sinusoid --shots "$shots" \
        --iterations "$ITER" --preset "$PRESET" --seed "$SEED" --cache-dir "$out/cache" ;;
    glyphs-search-protonet-chain) searched "$row" protonet chain 12 ;;
    sinusoid-search-maml-5shot)  searched "$row" maml mlp 8 --dataset sinusoid --shots 5 ;;
    sinusoid-search-maml-10shot) searched "$row" maml mlp 8 --dataset sinusoid --shots 10 ;;
    conv4-maml-5w1s-long)
      run "$row" "$py" "$root/cli.py" evaluate conv4 --algo maml --ways 5 --shots 1 --iterations "$LONG" \
        --preset "$PRESET" "${omni[@]}" --seed "$SEED" --cache-dir "$out/cache" ;;
    search-maml-chain-long)  # the best of row search-maml-chain, retrained for LONG steps
      run "$row" "$py" "$root/cli.py" export --study search-maml-chain --results-dir "$out" --retrain \
        --iterations "$LONG" --out "$out/search-maml-chain/export-long" --cache-dir "$out/cache" --data-root "$omniglot" ;;
    *) echo "unknown row '$row'; choose from: ${rows[*]}" >&2; exit 2 ;;
  esac
done
