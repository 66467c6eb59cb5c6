#!/usr/bin/env bash
# A one-machine SLURM (Debian slurm-wlm 22.05 + munge) with job accounting (slurmdbd on a
# local MariaDB) for tests and trying the `slurm` profile.
#
#   scripts/slurm-local.sh install   apt-get slurm-wlm, slurmdbd, munge, mariadb-server when missing
#   scripts/slurm-local.sh start     start munged and MariaDB, write /etc/slurm/slurmdbd.conf and
#                                    /etc/slurm/slurm.conf, start slurmdbd, register the cluster
#                                    with sacctmgr, start slurmctld and slurmd
#   scripts/slurm-local.sh status    exit 0 when the controller answers, the node is usable and
#                                    the accounting database answers sacct
#   scripts/slurm-local.sh stop      stop the daemons this script started (munged stays)
#
# No systemd is assumed: the daemons are started by hand, as root, and `start` is idempotent
# (running daemons are left alone). The configuration must be /etc/slurm/slurm.conf (the
# plugin's job step clears SLURM_CONF before its inner srun). With accounting, `sacct`
# reports finished jobs, so the executor plugin's default status checks (sacct) work.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
STATE=${SLURM_LOCAL_STATE:-/var/lib/dsa110-slurm}
MARK="# written by dsa110-contimg scripts/slurm-local.sh"
DB_SOCKET=/run/mysqld/mysqld.sock

die() { echo "slurm-local: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (starts munged, MariaDB, slurmdbd, slurmctld and slurmd)"; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd sbatch squeue sacct sacctmgr; do
    command -v "$cmd" >/dev/null || { missing+=(slurm-wlm); break; }
  done
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v munged >/dev/null || missing+=(munge)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root
  echo "slurm-local: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

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

db_up() { mariadb-admin --socket="$DB_SOCKET" ping >/dev/null 2>&1; }

start_mariadb() {
  db_up && return 0
  install -d -o mysql -g mysql -m 0755 /run/mysqld "$STATE/mariadb"
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  # mariadbd does not daemonize: detach it from this shell and from its output pipes
  setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$DB_SOCKET" \
    --bind-address=127.0.0.1 --port=3306 --pid-file="$STATE/mariadb/mariadb.pid" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
    --log-error="$STATE/mariadb/mariadb.log" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 120); do db_up && return 0; sleep 0.5; done
  tail -20 "$STATE/mariadb/mariadb.log" >&2 || true
  die "MariaDB did not start within 60 s (log above)"
}

# The accounting database's password: generated once, kept in slurmdbd.conf (mode 0600).
db_password() {
  local pass=""
  [ -f "$DBD_CONF" ] && pass=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
  [ -n "$pass" ] || pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  echo "$pass"
}

write_dbd_conf() {
  local pass=$1 host
  if [ -f "$DBD_CONF" ] && ! grep -qF "$MARK" "$DBD_CONF"; then
    die "$DBD_CONF exists and was not written by this script; refusing to overwrite a real cluster's configuration"
  fi
  mkdir -p /etc/slurm "$STATE/log"
  {
    echo "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
    for host in localhost 127.0.0.1; do
      echo "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY '$pass';"
      echo "ALTER USER 'slurm'@'$host' IDENTIFIED BY '$pass';"
      echo "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';"
    done
  } | mariadb --socket="$DB_SOCKET"
  (
    umask 077
    printf '%s\n' "$MARK" "AuthType=auth/munge" "DbdHost=localhost" "DbdAddr=127.0.0.1" \
      "SlurmUser=root" "PidFile=$STATE/slurmdbd.pid" "LogFile=$STATE/log/slurmdbd.log" \
      "StorageType=accounting_storage/mysql" "StorageHost=127.0.0.1" "StoragePort=3306" \
      "StorageUser=slurm" "StoragePass=$pass" "StorageLoc=slurm_acct_db" > "$DBD_CONF.tmp"
  )
  mv "$DBD_CONF.tmp" "$DBD_CONF"
}

dbd_up() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }

start_slurmdbd() {
  pid_alive "$STATE/slurmdbd.pid" || slurmdbd </dev/null >>"$STATE/log/slurmdbd.log" 2>&1
  for _ in $(seq 120); do dbd_up && break; sleep 0.5; done
  if ! dbd_up; then
    tail -20 "$STATE/log/slurmdbd.log" >&2 || true
    die "slurmdbd did not answer sacctmgr within 60 s (log above)"
  fi
  sacctmgr -n -P show cluster format=cluster | grep -qx local || sacctmgr -i add cluster local >/dev/null
}

stop_daemon() {
  local pidfile=$1 pid
  pid_alive "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

stop_slurm() { stop_daemon "$STATE/slurmd.pid"; stop_daemon "$STATE/slurmctld.pid"; }

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
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MpiDefault=none
ReturnToService=2
MinJobAge=300
SchedulerParameters=sched_interval=2
NodeName=localhost NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # a configuration from an older version of this script: restart the daemons with this one
  if [ -f "$CONF" ] && ! cmp -s "$CONF" "$CONF.tmp"; then stop_slurm; fi
  mv "$CONF.tmp" "$CONF"
}

node_ready() {
  local state
  state=$(sinfo -h -N -n localhost -o %t 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) return 0 ;; *) return 1 ;; esac
}

status() {
  pid_alive "$STATE/slurmctld.pid" && pid_alive "$STATE/slurmd.pid" && pid_alive "$STATE/slurmdbd.pid" \
    && scontrol ping >/dev/null 2>&1 && node_ready && sacct -n -X >/dev/null 2>&1
}

start() {
  need_root
  install_packages
  start_munge
  start_mariadb
  write_dbd_conf "$(db_password)"
  write_conf
  start_slurmdbd
  pid_alive "$STATE/slurmctld.pid" || slurmctld -f "$CONF"
  pid_alive "$STATE/slurmd.pid" || slurmd -f "$CONF" -N localhost
  for _ in $(seq 120); do
    if status; then
      echo "slurm-local: up ($(sinfo -h -o '%P %D nodes %c cpus %m MB %t'); accounting by slurmdbd for cluster $(sacctmgr -n -P show cluster format=cluster))"
      return 0
    fi
    sleep 0.5
  done
  for log in slurmctld slurmd slurmdbd; do
    echo "--- $STATE/log/$log.log" >&2; tail -20 "$STATE/log/$log.log" >&2 || true
  done
  die "slurmctld/slurmd did not become ready within 60 s (logs above)"
}

stop() {
  stop_slurm
  stop_daemon "$STATE/slurmdbd.pid"
  stop_daemon "$STATE/mariadb/mariadb.pid"
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
