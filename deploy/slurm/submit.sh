#!/usr/bin/env bash
# One study on a Slurm cluster: a job that creates it in the shared PostgreSQL storage once
# (`harness worker --prepare-only`: tables, folds, each candidate's search; it also checks the study
# file and the data), then a job array of `harness worker` tasks that start when it has succeeded.
#
#   export HARNESS_STORAGE=postgresql://user@db-host/harness   # password in ~/.pgpass, not here
#   deploy/slurm/submit.sh studies/sports.toml 8                # 8 workers (default 4)
#
# Edit prepare.sbatch and worker.sbatch first: how the cluster provides the harness (the
# HARNESS_VENV line), the data root, the partition, GPUs and time limits.
set -euo pipefail
study=${1:?usage: deploy/slurm/submit.sh STUDY.toml [WORKERS]}
workers=${2:-4}
: "${HARNESS_STORAGE:?set HARNESS_STORAGE to the database of the study, e.g. postgresql://user@db-host/harness}"
[ -f "$study" ] || { echo "submit.sh: no study file $study" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p logs
export HARNESS_STUDY=$study  # sbatch passes the environment on (--export=ALL, its default)
prepare=$(sbatch --parsable "$here/prepare.sbatch")
prepare=${prepare%%;*}  # "id;cluster" on a multi-cluster site
array=$(sbatch --parsable --dependency=afterok:"$prepare" --array=0-$((workers - 1)) "$here/worker.sbatch")
echo "prepare: job $prepare; workers: job array ${array%%;*} (0-$((workers - 1))), starting when $prepare succeeds"
echo "follow with: squeue --me; logs in logs/"
