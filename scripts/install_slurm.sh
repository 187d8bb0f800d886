#!/usr/bin/env bash
# Install the Slurm daemons, client and munge that tests/training/test_slurm*.py start (Debian/Ubuntu, as root).
# Idempotent: returns at once when every binary is on PATH. Exits non-zero with the reason when it cannot install,
# so that the test suite fails instead of skipping.
#   bash scripts/install_slurm.sh
set -euo pipefail

BINARIES=(slurmctld slurmd sbatch srun sinfo scontrol squeue munged munge unmunge)
PACKAGES=(slurmctld slurmd slurm-client munge)   # the minimal set; slurm-wlm pulls ~40 more packages

missing=()
for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install_slurm: missing ${missing[*]}; installing ${PACKAGES[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "install_slurm: need root to apt-get install ${PACKAGES[*]} (missing: ${missing[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_slurm: no apt-get on this machine; install Slurm (slurmctld, slurmd, client) and munge by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Packages must not start their own daemons: the tests start them with their own slurm.conf.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
fi
trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null

for b in "${BINARIES[@]}"; do
  command -v "$b" >/dev/null 2>&1 || { echo "install_slurm: $b still missing after apt-get install" >&2; exit 1; }
done
echo "install_slurm: installed slurmd $(dpkg-query -W -f='${Version}' slurmd)" >&2
