#!/usr/bin/env bash
# A one-machine SLURM (Debian slurm-wlm 22.05 + munge) for tests and trying profiles/slurm.
#
#   scripts/slurm-local.sh install   apt-get slurm-wlm and munge when missing
#   scripts/slurm-local.sh start     write /etc/slurm/slurm.conf, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh status    exit 0 when the controller answers and the node is usable
#   scripts/slurm-local.sh stop      stop the daemons this script started
#
# No systemd is assumed: the daemons are started by hand, as root. The configuration must be
# /etc/slurm/slurm.conf (the plugin's job step clears SLURM_CONF before its inner srun).
# There is no accounting database: sacct cannot report jobs, so profiles/slurm asks squeue,
# and MinJobAge keeps finished jobs visible to squeue for 10 minutes.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=${SLURM_LOCAL_STATE:-/var/lib/dsa110-slurm}
MARK="# written by dsa110-contimg scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (starts munged, slurmctld and slurmd)"; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd sbatch squeue; do command -v "$cmd" >/dev/null || missing=(slurm-wlm); done
  command -v munged >/dev/null || missing+=(munge)
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root
  echo "slurm-local: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  munge_up && return 0
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge /etc/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge_up && return 0; sleep 0.1; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's configuration"
  fi
  mkdir -p /etc/slurm "$STATE"/{ctld,d,log}
  cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_ready() {
  local state
  state=$(sinfo -h -N -n localhost -o %t 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) return 0 ;; *) return 1 ;; esac
}

status() {
  pid_alive "$STATE/slurmctld.pid" && pid_alive "$STATE/slurmd.pid" && scontrol ping >/dev/null 2>&1 && node_ready
}

start() {
  need_root
  install_packages
  start_munge
  write_conf
  pid_alive "$STATE/slurmctld.pid" || slurmctld -f "$CONF"
  pid_alive "$STATE/slurmd.pid" || slurmd -f "$CONF" -N localhost
  for _ in $(seq 120); do
    if status; then
      echo "slurm-local: up ($(sinfo -h -o '%P %D nodes %c cpus %m MB %t'))"
      return 0
    fi
    sleep 0.5
  done
  echo "--- $STATE/log/slurmctld.log" >&2; tail -20 "$STATE/log/slurmctld.log" >&2 || true
  echo "--- $STATE/log/slurmd.log" >&2; tail -20 "$STATE/log/slurmd.log" >&2 || true
  die "slurmctld/slurmd did not become ready within 60 s (logs above)"
}

stop() {
  for daemon in slurmd slurmctld; do
    local pidfile="$STATE/$daemon.pid"
    if pid_alive "$pidfile"; then
      local pid; pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  done
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
