#!/usr/bin/env bash
# The speed measurements of issue 13 in one run, written as one markdown table (docs/performance.md).
#
#   tools/gpu_check.sh [--reference PATH] [--out FILE] [--cudagraphs] [--tiny] [--dry-run]
#
# On one GPU, official sizes with random weights, fp16, CCF with a given mask, B = 4 and 24,
# 100 base + fast27 upsampler steps (about 5 minutes on an H200; every step is capped by
# STEP_TIMEOUT seconds, 300 by default, so that the whole stays under 8 minutes):
#   1. romlib bench: the plain eager path, the fast eager path, and (with --reference) the
#      glide-text2im checkout's own sampling loop in the same process;
#   2. romlib bench, compiled ("default" mode) with an empty compile cache: the first compile;
#   3. the same in a second process: the start from the cache ($ROMLIB_CACHE/torch-compile);
#   4. the full-size fast-vs-plain comparison (one forward pass of each UNet, fp16);
#   5. with --cudagraphs, also "reduce-overhead" (CUDA graphs), cold compile (about 2 more minutes).
# --tiny runs steps 1 and 4 on the CPU with tiny models (checks the script itself, in minutes);
# --dry-run only prints the commands.
set -euo pipefail

OUT=gpu_check.md
REF=""
TINY=0
DRY=0
GRAPHS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) REF="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --cudagraphs) GRAPHS=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (accepted: --reference PATH, --out FILE, --cudagraphs, --tiny, --dry-run)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CACHE="$WORK/compile-cache"   # empty: the first compile is a cold one
if [ "$TINY" = 1 ]; then
  COMMON=(--device cpu --batch 1 --steps 2 --upsample-steps 2)
  FVP=(--device cpu)
else
  COMMON=(--batch 4 24)
  FVP=()
fi
REFARGS=()
if [ -n "$REF" ]; then REFARGS=(--reference "$REF"); fi

run() {  # run (or, with --dry-run, print) one step; a failed or timed-out step is noted, not fatal
  echo "+ $*"
  if [ "$DRY" = 0 ]; then
    timeout "$STEP_TIMEOUT" "$@" || echo "step failed or timed out (exit $?): $*" | tee -a "$WORK/notes.txt"
  fi
}

run "$PY" -m romlib.cli bench "${COMMON[@]}" --paths plain eager "${REFARGS[@]}" --json "$WORK/eager.jsonl"
if [ "$TINY" = 0 ]; then
  run env ROMLIB_CACHE="$CACHE" "$PY" -m romlib.cli bench "${COMMON[@]}" --paths compile:default --json "$WORK/cold.jsonl"
  run env ROMLIB_CACHE="$CACHE" "$PY" -m romlib.cli bench "${COMMON[@]}" --paths compile:default --json "$WORK/warm.jsonl"
  if [ "$GRAPHS" = 1 ]; then
    run env ROMLIB_CACHE="$CACHE" "$PY" -m romlib.cli bench "${COMMON[@]}" --paths compile:reduce-overhead --json "$WORK/graphs.jsonl"
  fi
fi
echo "+ $PY -m romlib.cli bench --fast-vs-plain ${FVP[*]} > $WORK/fast_vs_plain.txt"
if [ "$DRY" = 0 ]; then
  timeout "$STEP_TIMEOUT" "$PY" -m romlib.cli bench --fast-vs-plain "${FVP[@]}" > "$WORK/fast_vs_plain.txt" \
    || echo "fast-vs-plain step failed (exit $?)" >> "$WORK/notes.txt"
fi
echo "+ write $OUT"
[ "$DRY" = 1 ] && exit 0

"$PY" - "$WORK" "$OUT" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

from romlib.bench import format_bench
from romlib.perf import BenchRow

work, out = Path(sys.argv[1]), Path(sys.argv[2])
rows, device = [], "?"
for name, label in (("eager", ""), ("cold", " (empty cache)"), ("warm", " (cached, 2nd process)"), ("graphs", "")):
    f = work / f"{name}.jsonl"
    for line in (f.read_text().splitlines() if f.exists() else []):
        d = json.loads(line)
        device = d.pop("device")
        d.pop("tiny")
        d["path"] += label
        rows.append(BenchRow(**d))
title = f"{device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"
parts = [f"## tools/gpu_check.sh on {title}", "", format_bench(rows, markdown=True), ""]
fvp = work / "fast_vs_plain.txt"
if fvp.exists():
    parts += ["```", fvp.read_text().strip(), "```", ""]
notes = work / "notes.txt"
if notes.exists():
    parts += ["Notes:", "", *[f"- {n}" for n in notes.read_text().splitlines()], ""]
out.write_text("\n".join(parts))
print("\n".join(parts))
EOF
