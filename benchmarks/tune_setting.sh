#!/usr/bin/env bash
# Tune methods on one split of a setting, then report the tuned recipes on another: the
# measurement behind the docs' "Tuned recipes" sections, run from the repository root.
#
# Usage: bash benchmarks/tune_setting.sh SETTING TUNE_SPLIT REPORT_SPLIT REFERENCES TRIALS TIMEOUT \
#            METHOD... [-- REPORT_ARG...]
#   REFERENCES: the bank of both splits (0: accuracy gaps only); TRIALS and TIMEOUT (s): each
#   study's budget; REPORT_ARGs go to the report's runs only, e.g. another forget request where
#   the split seed alone does not change it (class-wise forgetting).
# Examples (as in docs/benchmarks/fer2013.md and cifar10.md):
#   bash benchmarks/tune_setting.sh fer2013 0 1 0 5 540 dlfd_fast finetune neggrad_plus scrub \
#       boundary_shrink boundary_expanding
#   bash benchmarks/tune_setting.sh cifar10 0 1 0 4 480 boundary_expanding boundary_shrink \
#       dlfd_fast finetune neggrad_plus scrub -- --data.init_args.forget.init_args.classes=[3]
# Writes configs/tuned/SETTING/*.yaml, benchmarks/results/tuning/SETTING/*.json and
# benchmarks/results/SETTING_tuned; networks are cached in benchmarks/runs/.
set -euo pipefail
setting=$1 tune_split=$2 report_split=$3 references=$4 trials=$5 timeout=$6
shift 6
methods=()
while (($#)) && [[ $1 != -- ]]; do methods+=("$1"); shift; done
(($#)) && shift  # the "--"
report_args=("$@")
for method in "${methods[@]}"; do
  unlearn-pl-tune --setting "$setting" --method "$method" --trials "$trials" --timeout "$timeout" \
    --split-seed "$tune_split" --references "$references" --num-threads 2 \
    --workdir "benchmarks/runs/${setting}_tuning" \
    --output "configs/tuned/$setting/$method.yaml" \
    --record "benchmarks/results/tuning/$setting/$method.json"
done
unlearn-pl-compare --setting "$setting" --methods "${methods[@]}" --seeds "$report_split" \
  --method-seeds 0 --references "$references" --num-threads 2 \
  --workdir "benchmarks/runs/${setting}_tuned" --output "benchmarks/results/${setting}_tuned" \
  "${report_args[@]}"
