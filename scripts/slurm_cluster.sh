#!/usr/bin/env bash
# scripts/slurm_cluster.sh: start/stop a real one-node SLURM cluster on this
# machine, for the tests marked `slurm` (and for trying the CLI by hand).
#
#   scripts/slurm_cluster.sh start    # install (root), configure, start; waits for idle node
#   scripts/slurm_cluster.sh status   # exit 0 when the cluster answers, 3 when it is down
#   scripts/slurm_cluster.sh env      # prints `export SLURM_CONF=...`: eval "$(... env)"
#   scripts/slurm_cluster.sh stop     # cancels jobs, kills the daemons, removes the folder
#
# Everything lives in ${SLURM_CLUSTER_DIR:-/tmp/lenet-slurm}: slurm.conf, the
# munge key/socket, state, spool, pid and log files (log/), and `env` (the lines
# `env` prints). Clients (srun, sbatch, squeue, scontrol, scancel) only need
# SLURM_CONF=<dir>/slurm.conf: its AuthInfo=socket=... points them at the private
# munged, so no MUNGE variable is needed. This script writes nothing under /etc
# (installing Debian's `munge` creates /etc/munge/munge.key itself; it is unused).
# Ports: SLURM_CLUSTER_CTLD_PORT/SLURM_CLUSTER_SLURMD_PORT (6817/6818), so a second
# cluster (another SLURM_CLUSTER_DIR) can run beside the first.
# `start` and `stop` take a lock (<dir>.lock): parallel callers wait their turn.
#
# Exit codes: start 0 up (also "already running"), 1 a daemon did not come up
# (log tails printed, daemons killed, folder kept), 2 cannot start here (not
# root, packages missing and not installable): the `slurm` tests skip with it.
# status 0 up, 3 down. env 0, or 1 when not started. stop 0 (also when down).
#
# Findings (Debian 12, slurm-wlm 22.05.8-4+deb12u3, munge 0.5.15; 2 CPUs, 24 GiB,
# no systemd, root):
# - apt-get install --no-install-recommends slurm-wlm munge: 9 packages, ~16 s;
#   postinst cannot start the services (policy-rc.d), we start the daemons.
# - start (packages there): ~1-2 s to an idle node. stop: ~2 s (each daemon
#   takes ~2 s on SIGTERM, they are signalled together), up to ~7 s when a job
#   ignores SIGTERM (KillWait=5).
# - munged runs as root with --key-file/--socket/--pid-file/--log-file/--seed-file
#   in <dir>/munge (the socket's folder must be 0755, munged says so otherwise).
# - proctrack/linuxproc, task/none (no cgroup.conf), select/cons_tres + CR_Core:
#   two 1-CPU jobs run side by side; srun -N1 -n2 hostname works; non-root users
#   can submit too. sbatch --wrap 'sleep 1' is done ~2 s after submission.
# - Refusals (sbatch exits 1, nothing queued):
#   --gres=gpu:1 or --gpus=1 -> "sbatch: error: Invalid generic resource (gres) specification"
#                              (srun: "srun: error: Invalid generic resource (gres) specification")
#   -p nosuch -> "sbatch: error: invalid partition specified: nosuch"
#                "sbatch: error: Batch job submission failed: Invalid partition name specified"
#   -n 3 (EnforcePartLimits=ALL; without it the job pends forever, Reason=PartitionConfig)
#             -> "sbatch: error: Batch job submission failed: More processors requested than permitted"
#   -N 2 -> "sbatch: error: Batch job submission failed: Node count specification invalid"
#   --mem=100G -> "sbatch: error: Memory specification can not be satisfied"
#                 "sbatch: error: Batch job submission failed: Requested node configuration is not available"
# - Signals: scancel --signal=USR1 JOB reaches the job steps only (srun tasks),
#   not the batch shell; --batch only the batch shell; --full both. sbatch
#   --signal=USR1@N signals the steps, --signal=B:USR1@N the batch shell; it
#   comes up to ~30 s late (slurmctld checks every ~30 s).
# - scontrol requeue JOB: SIGTERM to the job (SIGKILL after KillWait), back to
#   PENDING (Reason=BeginTime) with EligibleTime = now + cred_expire + 1 s, and
#   it starts on the next scheduler pass (default cred_expire=120 s and
#   sched_interval=60 s: minutes; cred_expire=10 alone: 36 s measured); with
#   AuthInfo cred_expire=5 (the minimum) and sched_interval=2,bf_interval=1 the
#   job runs again 5.5-8 s after the requeue, same job id, SLURM_RESTART_COUNT=1,
#   2, ... (unset on the first run), scontrol show job: Restarts=N.
# - MinJobAge=10: finished jobs leave squeue/scontrol ~10-30 s after the end (no
#   accounting, so no sacct).
set -euo pipefail

DIR="${SLURM_CLUSTER_DIR:-/tmp/lenet-slurm}"
MARK="$DIR/.lenet-slurm-cluster"
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
CTLD_PORT="${SLURM_CLUSTER_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_CLUSTER_SLURMD_PORT:-6818}"
START_TIMEOUT="${SLURM_CLUSTER_TIMEOUT:-60}"

log() { echo "slurm_cluster: $*" >&2; }

env_lines() {
  echo "export SLURM_CONF=$CONF"
}

have_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
    command -v sbatch >/dev/null && command -v munged >/dev/null
}

install_packages() {
  have_packages && return 0
  if [ "$(id -u)" != 0 ]; then
    log "cannot start: slurm-wlm/munge are not installed and this is not root"
    return 2
  fi
  if ! command -v apt-get >/dev/null; then
    log "cannot start: slurm-wlm/munge are missing and there is no apt-get"
    return 2
  fi
  log "installing slurm-wlm and munge (apt-get)"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-install-recommends install slurm-wlm munge)
  if ! "${apt[@]}" >"/tmp/lenet-slurm-apt.log" 2>&1; then
    apt-get -q update >>"/tmp/lenet-slurm-apt.log" 2>&1 || true
    if ! "${apt[@]}" >>"/tmp/lenet-slurm-apt.log" 2>&1; then
      tail -n 20 /tmp/lenet-slurm-apt.log >&2
      log "cannot start: apt-get install slurm-wlm munge failed"
      return 2
    fi
  fi
  have_packages || { log "cannot start: packages installed but binaries missing"; return 2; }
}

pid_alive() {  # pid_alive FILE NAME: the pid in FILE runs a program called NAME
  local pid  # (/proc, not kill -0: works for non-root users too)
  [ -s "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

daemons_alive() {
  pid_alive "$MUNGE_DIR/munged.pid" munged && pid_alive "$DIR/run/slurmctld.pid" slurmctld &&
    pid_alive "$DIR/run/slurmd.pid" slurmd
}

is_up() {
  [ -f "$CONF" ] && daemons_alive || return 1
  local _  # a busy slurmctld may miss a ping: try a few times
  for _ in 1 2 3; do
    SLURM_CONF="$CONF" timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
    sleep 1
  done
  return 1
}

node_state() {
  SLURM_CONF="$CONF" timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -n 1
}

write_config() {
  local host cpus topo mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  # slurmd -C reports what slurmd will register; reuse its topology so the node
  # is not drained for a mismatch, and ask for 95% of its memory.
  topo="$(slurmd -C 2>/dev/null | head -n 1 || true)"
  mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$topo")"
  [ -n "$mem" ] || mem="$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)"
  mem=$((mem * 95 / 100))
  local node="NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus"
  local f
  for f in Boards SocketsPerBoard CoresPerSocket ThreadsPerCore; do
    local v
    v="$(sed -n "s/.* $f=\([0-9]*\).*/\1/p" <<<"$topo")"
    [ -n "$v" ] && node+=" $f=$v"
  done
  # Keep the slurmd -C CPU count if it differs from nproc (affinity masks).
  local ccpus
  ccpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$topo")"
  [ -n "$ccpus" ] && node="${node/CPUs=$cpus/CPUs=$ccpus}"
  node+=" RealMemory=$mem State=UNKNOWN"

  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: a one-node cluster for lenet-cli's tests.
ClusterName=lenet
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
PreemptType=preempt/none
# GresTypes unset: no gres on this node, so any --gres request is refused.
ReturnToService=2
JobRequeue=1
EnforcePartLimits=ALL
KillWait=5
MinJobAge=10
InactiveLimit=0
MailProg=/bin/true
PlugStackConfig=$DIR/plugstack.conf
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$DIR/plugstack.conf"
}

dump_logs() {
  local f
  for f in "$MUNGE_DIR/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
    [ -f "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 20 "$f" >&2
  done
}

cmd_start() {
  if is_up; then
    log "already running ($DIR)"
    env_lines
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    log "cannot start: needs root (runs munged/slurmctld/slurmd as root)"
    return 2
  fi
  local rc=0
  install_packages || rc=$?
  [ "$rc" = 0 ] || return "$rc"
  # A half-started or stale cluster: clear it first.
  if [ -e "$MARK" ]; then cmd_stop >/dev/null 2>&1 || true; fi
  if [ -e "$DIR" ] && [ ! -e "$MARK" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
    log "cannot start: $DIR exists and was not made by this script"
    return 2
  fi
  mkdir -p "$DIR"/{state,spool,run,log} "$MUNGE_DIR"
  : >"$MARK"
  chmod 0755 "$DIR"
  chmod 0755 "$MUNGE_DIR"  # munged wants the socket dir world-executable

  # munge: private key, socket, pid, log and seed in the folder.
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" --force >/dev/null
  else
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0600 "$MUNGE_DIR/munge.key"
  if ! munged --force --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
      --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
      --seed-file="$MUNGE_DIR/munged.seed" >/dev/null 2>>"$MUNGE_DIR/munged.log" 9>&-; then
    dump_logs
    kill_pidfiles "$MUNGE_DIR/munged.pid"
    log "munged did not start"
    return 1
  fi

  write_config
  env_lines >"$DIR/env"
  export SLURM_CONF="$CONF"
  # -c: start clean (the folder is fresh anyway). Both daemons fork into the
  # background; 9>&-: they must not inherit the lock.
  local daemon args
  for daemon in slurmctld slurmd; do
    args=(-f "$CONF")
    [ "$daemon" = slurmctld ] && args=(-c "${args[@]}")
    if ! "$daemon" "${args[@]}" >>"$DIR/log/$daemon.out" 2>&1 9>&-; then
      cat "$DIR/log/$daemon.out" >&2
      dump_logs
      kill_pidfiles "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$MUNGE_DIR/munged.pid"
      log "$daemon did not start"
      return 1
    fi
  done

  local t0=$SECONDS state=""
  while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
    state="$(node_state || true)"
    case "$state" in
      idle*|mixed*|allocated*) break ;;
    esac
    daemons_alive || { sleep 0.5; daemons_alive; } || { state="${state:-none} (a daemon died)"; break; }
    sleep 0.5
  done
  case "$state" in
    idle*|mixed*|allocated*) ;;
    *)
      dump_logs
      SLURM_CONF="$CONF" sinfo -N -l >&2 2>/dev/null || true
      log "node not idle after $((SECONDS - t0))s (state: ${state:-none}); logs in $DIR/log"
      kill_pidfiles "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$MUNGE_DIR/munged.pid"
      return 1 ;;
  esac
  log "up in $((SECONDS - t0))s: node $(hostname -s) $state; env in $DIR/env"
  env_lines
}

kill_pidfiles() {  # kill_pidfiles FILE...: TERM all at once, KILL after 10 s
  local f pid pids=()
  for f in "$@"; do
    [ -s "$f" ] || continue
    pid="$(cat "$f" 2>/dev/null)" || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

our_stepds() {  # slurmstepd processes started by this cluster's slurmd
  local p
  for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
    if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then
      echo "$p"
    fi
  done
}

descendants() {  # descendants PID: all processes below it
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END { for (p in parent) { q = parent[p]
            while (q != "" && q != 0 && q != 1) { if (q == root) { print p; break } q = parent[q] } } }'
}

cmd_stop() {
  if [ ! -e "$MARK" ]; then
    log "not running (no $DIR)"
    return 0
  fi
  if [ -f "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
    local jobs
    jobs="$(SLURM_CONF="$CONF" timeout 10 squeue -h -o %i 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      SLURM_CONF="$CONF" timeout 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq 20); do  # up to KillWait (5 s) + a little
        [ -z "$(our_stepds)" ] && break
        sleep 0.5
      done
    fi
  fi
  # Each daemon takes ~2 s to exit on SIGTERM: signal them together.
  kill_pidfiles "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$MUNGE_DIR/munged.pid"
  # Step daemons outlive slurmd: kill those still left, with their jobs.
  local p
  for p in $(our_stepds); do
    # shellcheck disable=SC2046
    kill -KILL "$p" $(descendants "$p") 2>/dev/null || true
  done
  rm -rf "$DIR"
  log "stopped; removed $DIR"
}

cmd_status() {
  if is_up; then
    SLURM_CONF="$CONF" sinfo -N 2>/dev/null || true
    return 0
  fi
  log "down ($DIR)"
  return 3
}

cmd_env() {
  env_lines
  [ -f "$CONF" ] || { log "not started: $CONF does not exist"; return 1; }
}

locked() {  # one start/stop at a time (parallel test workers all call start)
  if command -v flock >/dev/null && { exec 9>>"$DIR.lock"; } 2>/dev/null; then
    flock -w 120 9 || { log "timed out waiting for $DIR.lock"; return 1; }
  fi
  "$@"
}

case "${1:-}" in
  start) locked cmd_start ;;
  stop) locked cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|status|env   (folder: \$SLURM_CLUSTER_DIR, default /tmp/lenet-slurm)" >&2; exit 64 ;;
esac
