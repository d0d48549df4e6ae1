#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, from Debian's packages, for tests/test_slurm.py and CI.
#   sudo scripts/slurm-single-node.sh          # install if needed, start; a second run finds it running
#   sudo scripts/slurm-single-node.sh stop     # stop slurmd, slurmctld and munged
# One CPU-only partition ("cpu") holding this host with its cores and memory, consumable cores and memory
# (select/cons_tres), no accounting database. Daemons talk over loopback only: the controller is this host.
# State, spool and logs live under FLEX_SLURM_DIR (default /var/tmp/flexharness-slurm).
set -euo pipefail

DIR=${FLEX_SLURM_DIR:-/var/tmp/flexharness-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by flexharness scripts/slurm-single-node.sh"

die() { echo "slurm-single-node: $*" >&2; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "slurmctld/slurmd/munged missing and no apt-get: install Slurm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
}

running() { pgrep -x "$1" >/dev/null; }

start_munge() {
    running munged && return
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    id munge >/dev/null 2>&1 && chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    id munge >/dev/null 2>&1 && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if id munge >/dev/null 2>&1; then runuser -u munge -- munged; else munged --force; fi
}

write_conf() {
    local host cores memory
    host=$(hostname -s)
    cores=$(nproc)
    memory=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)  # MB; slurmd drains a node
                                                                               # that has less than it says
    if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: this machine has a Slurm of its own"
    fi
    mkdir -p "$(dirname "$CONF")" "$DIR/ctld" "$DIR/spool" "$DIR/log"
    cat > "$CONF" <<EOF
$MARK
ClusterName=flexharness
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cores RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for_node() {
    for _ in $(seq 60); do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1)
        case "$state" in
            idle*|mix*|alloc*) echo "slurm-single-node: node $(hostname -s) is $state"; return ;;
            drain*|down*) scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    die "the node did not come up; see $DIR/log/"
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root: it installs packages and starts munged, slurmctld and slurmd"
    install_packages
    start_munge
    if running slurmctld && running slurmd; then
        echo "slurm-single-node: already running"
    else
        write_conf
        running slurmctld || slurmctld
        running slurmd || slurmd
    fi
    wait_for_node
}

stop() {
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" /run/munge/munged.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    echo "slurm-single-node: stopped"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 [start|stop]" ;;
esac
