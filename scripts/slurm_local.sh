#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for trying the Slurm launcher and for the tests.
#
#   scripts/slurm_local.sh start    # install slurm-wlm + munge when missing (apt-get, needs root),
#                                   # write /etc/slurm/slurm.conf for localhost, start the daemons
#   scripts/slurm_local.sh stop     # stop the daemons this script started
#   scripts/slurm_local.sh status   # sinfo
#
# One partition, "debug" (the default), holding this machine with all its cores and 90% of its
# memory, and enforcing it: a job that asks for more (the Slurm launcher's defaults of 4 CPUs and
# 32 GB on a small machine) is refused by sbatch at submission instead of pending forever; no GPUs (add `Gres=gpu:N` and a gres.conf on a GPU machine). Daemons run without systemd,
# so this also works in containers. Exit status 3 means Slurm cannot be installed here.
set -euo pipefail

STATE=/var/lib/slurm-local
CONF=/etc/slurm/slurm.conf

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "slurm_local.sh: must run as root (it installs packages and starts daemons)" >&2
        exit 3
    fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    if ! command -v apt-get >/dev/null; then
        echo "slurm_local.sh: apt-get not found; install Slurm and munge by hand" >&2
        exit 3
    fi
    echo "installing slurm-wlm and munge (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || { echo "slurm_local.sh: apt-get update failed" >&2; exit 3; }
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null \
        || { echo "slurm_local.sh: apt-get install slurm-wlm munge failed" >&2; exit 3; }
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" /var/log/slurm
    cat >"$CONF" <<CONF
# Written by scripts/slurm_local.sh: one node, this machine.
ClusterName=lifelong-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerParameters=sched_interval=1
EnforcePartLimits=ALL
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO MaxCPUsPerNode=$cpus MaxMemPerNode=$mem_mb
CONF
}

start_munge() {
    if pgrep -x munged >/dev/null && [ -S /run/munge/munge.socket.2 ]; then return; fi
    pkill -x munged 2>/dev/null || true  # a munged without its socket is on its way out
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
        [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do [ -S /run/munge/munge.socket.2 ] && return; sleep 0.25; done
}

ours_only() {
    if [ -f "$CONF" ] && ! head -1 "$CONF" | grep -q "Written by scripts/slurm_local.sh"; then
        echo "slurm_local.sh: $CONF was not written by this script (a real cluster?); leaving it alone" >&2
        exit 3
    fi
}

node_up() {
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

clear_leftovers() {
    # Daemons and job steps of an earlier start (a killed test, a crashed job) keep a fresh node
    # from registering: end them and forget their state. Only this script's own cluster is touched.
    local daemon
    for daemon in slurmd slurmctld slurmstepd; do pkill -x "$daemon" 2>/dev/null || true; done
    for _ in $(seq 1 20); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x slurmstepd >/dev/null || break
        sleep 0.5
    done
    for daemon in slurmd slurmctld slurmstepd; do pkill -9 -x "$daemon" 2>/dev/null || true; done
    rm -rf "${STATE:?}/d" "${STATE:?}/ctld"
}

start() {
    need_root
    ours_only
    install
    start_munge
    if pgrep -x slurmctld >/dev/null && node_up; then
        echo "slurm is already up:"
        sinfo
        return
    fi
    clear_leftovers
    write_conf
    slurmctld -c  # -c: forget jobs of an earlier start
    slurmd -c
    for i in $(seq 1 120); do
        if node_up; then
            echo "slurm is up:"
            sinfo
            return
        fi
        if [ "$i" = 20 ]; then  # registered but marked down or drained by an earlier life: bring it back
            scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true
        fi
        sleep 0.5
    done
    echo "slurm_local.sh: the node did not come up within 60 s; see /var/log/slurm/" >&2
    sinfo >&2 || true
    exit 1
}

stop() {
    need_root
    ours_only
    scancel --user=root 2>/dev/null || true
    clear_leftovers
    if [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
    for _ in $(seq 1 20); do pgrep -x munged >/dev/null || break; sleep 0.25; done
    echo "slurm stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
