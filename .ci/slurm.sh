#!/usr/bin/env bash
# A real one-node SLURM cluster (with slurmdbd accounting) for the workflow's SLURM test.
#
#   bash .ci/slurm.sh start   # install (once), configure and start; waits until the node is idle
#   bash .ci/slurm.sh stop    # stop the daemons this script started, by their pid files
#
# Run as root on Debian (no systemd: every daemon is started by hand). Idempotent: a second
# `start` installs nothing and leaves running daemons alone. Accounting goes through
# slurmdbd + MariaDB so that `sacct` works: the Snakemake SLURM plugin then runs with its
# defaults, and the test can show the jobs as accounted by SLURM.
set -euo pipefail

STATE_DIR="${MIDIFFUSION_SLURM_DIR:-/var/tmp/midiffusion-slurm}"
CLUSTER=midiffusion
PARTITION=debug
CONF_DIR=/etc/slurm                      # where Debian's client commands look for slurm.conf
DB_SOCKET=/run/mysqld/mysqld.sock
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=midiffusion-ci                   # local-only test database on a throwaway cluster
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

log() { echo "[slurm.sh] $*"; }
die() { echo "[slurm.sh] ERROR: $*" >&2; exit 1; }

# Print the tail of a daemon log and fail: the common reason a start goes wrong.
die_with_log() {
  local message=$1 logfile=$2
  [[ -f "$logfile" ]] && { echo "--- last lines of $logfile ---" >&2; tail -n 20 "$logfile" >&2; }
  die "$message"
}

# Poll a command until it succeeds or the timeout (seconds) runs out.
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  local missing=0 tool
  for tool in slurmctld slurmd slurmdbd sacct munged mariadbd; do
    command -v "$tool" >/dev/null || missing=1
  done
  if ((missing == 0)); then
    log "packages already installed"
    return
  fi
  [[ $EUID -eq 0 ]] || die "installing ${PACKAGES[*]} needs root"
  local start=$SECONDS
  log "installing ${PACKAGES[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
  log "installed in $((SECONDS - start)) s"
}

# Memory that SLURM may hand out: 75% of what is available now, so slurmd never finds
# less memory than configured (which would drain the node).
real_memory_mb() {
  awk '/^MemAvailable:/ {printf "%d", $2 / 1024 * 0.75}' /proc/meminfo
}

write_configs() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(real_memory_mb)
  mkdir -p "$STATE_DIR"/{state,spool,log,run} "$CONF_DIR"
  cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by .ci/slurm.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# No cgroups in containers: track processes by their parent pid, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# A node restarted by this script comes back into service by itself.
ReturnToService=2
# squeue keeps finished jobs 5 min, long enough for any status query.
MinJobAge=300
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Keep sbatch --comment in the accounting: the Snakemake plugin puts the rule name there.
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Written by .ci/slurm.sh: accounting into the local MariaDB.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE_DIR/run/slurmdbd.pid
LogFile=$STATE_DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
  # slurmdbd refuses a config that others can read (it holds the database password).
  chmod 600 "$CONF_DIR/slurmdbd.conf"
  log "wrote $CONF_DIR/slurm.conf (node $host, CPUs=$cpus, RealMemory=$mem MB) and slurmdbd.conf"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
    return
  fi
  [[ -f /etc/munge/munge.key ]] \
    || die "no /etc/munge/munge.key (the munge package creates it at install)"
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  wait_for 10 sh -c 'munge -n | unmunge' \
    || die_with_log "munged did not answer" /var/log/munge/munged.log
  log "munged started"
}

start_mariadb() {
  if mariadb-admin --socket="$DB_SOCKET" ping >/dev/null 2>&1; then
    log "mariadb already running"
  else
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    nohup /usr/sbin/mariadbd --user=mysql --socket="$DB_SOCKET" \
      --pid-file=/run/mysqld/mysqld.pid >"$STATE_DIR/log/mariadb.log" 2>&1 &
    wait_for 60 mariadb-admin --socket="$DB_SOCKET" ping \
      || die_with_log "mariadb did not start" "$STATE_DIR/log/mariadb.log"
    log "mariadb started"
  fi
  # root logs in through the unix socket; the statements are idempotent.
  mariadb --socket="$DB_SOCKET" <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
EOF
}

start_slurmdbd() {
  if pid_alive "$STATE_DIR/run/slurmdbd.pid"; then
    log "slurmdbd already running"
  else
    slurmdbd
    wait_for 60 sacctmgr -n list cluster \
      || die_with_log "slurmdbd did not answer" "$STATE_DIR/log/slurmdbd.log"
    log "slurmdbd started"
  fi
  # The cluster must be known to slurmdbd before slurmctld registers; adding it also
  # creates the `root` account that the profile submits under.
  if [[ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not add cluster $CLUSTER"
    log "cluster $CLUSTER added to accounting"
  fi
}

start_slurm_daemons() {
  if pid_alive "$STATE_DIR/run/slurmctld.pid"; then
    log "slurmctld already running"
  else
    slurmctld || die_with_log "slurmctld failed to start" "$STATE_DIR/log/slurmctld.log"
    wait_for 30 scontrol ping \
      || die_with_log "slurmctld did not answer" "$STATE_DIR/log/slurmctld.log"
    log "slurmctld started"
  fi
  if pid_alive "$STATE_DIR/run/slurmd.pid"; then
    log "slurmd already running"
  else
    slurmd || die_with_log "slurmd failed to start" "$STATE_DIR/log/slurmd.log"
    log "slurmd started"
  fi
}

node_idle() { [[ "$(sinfo -h -N -o %t 2>/dev/null)" == idle* ]]; }

wait_node_idle() {
  if ! wait_for 60 node_idle; then
    sinfo -N -l >&2 || true
    die_with_log "node $(hostname -s) did not become idle within 60 s" "$STATE_DIR/log/slurmd.log"
  fi
  log "cluster $CLUSTER ready: $(sinfo -h -o '%P %D node(s) %t')"
}

start() {
  local begin=$SECONDS
  install_packages
  # A running cluster keeps the config it was started with (clients and daemons must agree).
  if pid_alive "$STATE_DIR/run/slurmctld.pid"; then
    log "slurmctld running: keeping $CONF_DIR/slurm.conf"
  else
    write_configs
  fi
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurm_daemons
  wait_node_idle
  log "start took $((SECONDS - begin)) s"
}

# Stop one daemon by its pid file, waiting up to 30 s for it to exit.
stop_daemon() {
  local name=$1 pidfile=$2
  if ! pid_alive "$pidfile"; then
    log "$name not running"
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid"
  if ! wait_for 30 sh -c "! kill -0 $pid"; then
    log "$name ($pid) ignored SIGTERM; killing it"
    kill -9 "$pid"
  fi
  log "$name stopped"
}

stop() {
  stop_daemon slurmd "$STATE_DIR/run/slurmd.pid"
  stop_daemon slurmctld "$STATE_DIR/run/slurmctld.pid"
  stop_daemon slurmdbd "$STATE_DIR/run/slurmdbd.pid"
  stop_daemon mariadb /run/mysqld/mysqld.pid
  stop_daemon munged /run/munge/munged.pid
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: bash .ci/slurm.sh start|stop" ;;
esac
