#!/usr/bin/env bash
# Every row of summary.md, in the order the figures were needed. Each call trains the runs it names (runs
# finished before are reused) and rewrites summary.json, summary.md and samples.png from every finished run here.
set -euo pipefail
cd "$(dirname "$0")/../../.."
G="python -m data.generate split=train num_trajectories=2048 frames=2 format=fno dtype=float64 progress=false"
$G pde=burgers_fno path=datasets/burgers_fno.mat          # kept when complete
$G pde=burgers_fno_2pi path=datasets/burgers_fno_2pi.mat
B="python -m benchmarks.burgers_fno --jobs 2"
$B --settings offline-256 repo-256 repo-online-256 --seeds 0
$B --settings online-2pi-256 offline-2pi-256 --seeds 0 1 2
$B --settings repo-pool10000-256 --seeds 0 &   # the three side by side, one thread each
$B --settings repo-online-256 --seeds 1 &
$B --settings repo-256 --seeds 1
wait
$B --settings offline-2pi-1024 --seeds 0 1    # s = 1024: two side by side (81 min), then the third alone
python -m benchmarks.burgers_fno --settings offline-2pi-1024 --seeds 2 --jobs 1
