#!/usr/bin/env bash
# The one-GPU check of the paper-scale claims (benchmarks/gpu_check.py): training steps/s and peak memory
# of the paper's small network (fp32, bf16, bf16 + torch.compile, both heads), 1,000 cached samples
# projected to 10,000, and an exact SIGKILL-and-resume of the `train` verb. At most 8 minutes.
#
#   benchmarks/gpu_check.sh                      # summaries in gpu_check/ (gpu_check.md, gpu_check.json)
#   benchmarks/gpu_check.sh OUT [OPTIONS...]     # OPTIONS go to gpu_check.py (e.g. --sections resume)
#
# Exit status: gpu_check.py's (1: the resume check failed), 124 when the time limit stopped it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-gpu_check}"
status=0
timeout --kill-after=30 480 python benchmarks/gpu_check.py --device cuda --out "$out" "${@:2}" || status=$?
if [ "$status" -eq 124 ]; then
  echo "gpu_check: stopped at the 480 s limit; the summaries hold the sections that finished" >&2
fi
if [ -f "$out/gpu_check.md" ]; then
  echo "gpu_check: summary in $out/gpu_check.md (all numbers in $out/gpu_check.json); exit status $status"
else
  echo "gpu_check: no summary written (see the error above); exit status $status"
fi
exit "$status"
