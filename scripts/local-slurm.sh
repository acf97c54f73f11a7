#!/usr/bin/env bash
# local-slurm.sh — a private single-machine Slurm cluster for running `slurm/*.sh` and the Slurm
# tests (tests/slurm_jobs.rs) on one Linux box, without systemd.
#
#   sudo scripts/local-slurm.sh start    # idempotent: (re)writes the config, starts what is not running
#   sudo scripts/local-slurm.sh stop     # stops exactly the daemons this script started
#   scripts/local-slurm.sh env           # prints `export SLURM_CONF=…` for sbatch/squeue/scancel
#
# It is its own cluster (own slurm.conf, state directory and ports), so it runs beside a site
# Slurm or another test cluster on the same host without touching them; clients find it only
# through SLURM_CONF. Needs root (slurmd launches jobs), Debian's slurmctld + slurmd +
# slurm-client + munge (./scripts/bootstrap.sh --with-slurm installs them) and, for MPI jobs, MPICH.
#
# Settings (environment):
#   MULTIMAT_SLURM_STATE=/tmp/multimat-local-slurm   config, logs, spool, pid files, controller state
#   MULTIMAT_SLURM_CPUS=16       CPUs the node advertises (may exceed the real cores: test jobs
#                                 are small, and several must run at once)
#   MULTIMAT_SLURM_PORT=6917     slurmctld port; slurmd uses the next one (Slurm's defaults are
#                                 6817/6818, left free for a site or shared test cluster)
#   LOCAL_SLURM_GPUS=0           fake GPUs the node advertises (gres gpu:N, one fake device file
#                                 each under $STATE/dev, so Slurm schedules, counts and binds
#                                 them; jobs then run multimat with --device cuda-sim). N > 0 is
#                                 another cluster beside the CPU one: state
#                                 /tmp/multimat-local-slurm-gpuN and port 6927 unless set above.
set -euo pipefail

GPUS=${LOCAL_SLURM_GPUS:-0}
case "$GPUS" in '' | *[!0-9]*) echo "[local-slurm] ERROR: LOCAL_SLURM_GPUS=$GPUS is not a number" >&2; exit 2 ;; esac
if [ "$GPUS" -gt 0 ]; then
    STATE=${MULTIMAT_SLURM_STATE:-/tmp/multimat-local-slurm-gpu$GPUS}
    CTLD_PORT=${MULTIMAT_SLURM_PORT:-6927}
else
    STATE=${MULTIMAT_SLURM_STATE:-/tmp/multimat-local-slurm}
    CTLD_PORT=${MULTIMAT_SLURM_PORT:-6917}
fi
CPUS=${MULTIMAT_SLURM_CPUS:-16}
SLURMD_PORT=$((CTLD_PORT + 1))
CONF=$STATE/etc/slurm.conf
HOST=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "[local-slurm] $*"; }
die() { echo "[local-slurm] ERROR: $*" >&2; exit 1; }

# `pid_of NAME` prints the pid recorded in $STATE/pids/NAME.pid if that process is alive and is
# NAME (pids are reused). /proc/PID/comm, unlike /proc/PID/exe, is readable by any user.
pid_of() {
    local f=$STATE/pids/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc 0-9 < "$f")
    [ -n "$pid" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

# `wait_for SECONDS CMD…` retries CMD every 0.2 s.
wait_for() {
    local end=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}

write_config() {
    mkdir -p "$STATE"/{etc,ctld,spool,pids,log}
    chmod 755 "$STATE"
    local mem_mb node_line
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.8) }' /proc/meminfo)
    # Without GPUs the file is exactly what it always was (a changed file restarts the daemons).
    node_line="NodeName=$HOST NodeHostname=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN"
    if [ "$GPUS" -gt 0 ]; then
        # Fake GPUs: Slurm only stat()s a gres device file (major/minor for cgroup device
        # limits, which task/none does not apply), so /dev/null's character device stands in.
        mkdir -p "$STATE/dev"
        local i
        for i in $(seq 0 $((GPUS - 1))); do
            [ -c "$STATE/dev/fakegpu$i" ] || mknod "$STATE/dev/fakegpu$i" c 1 3
        done
        node_line="GresTypes=gpu
NodeName=$HOST NodeHostname=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN"
        printf '# Written by scripts/local-slurm.sh: %s fake GPUs.\nAutoDetect=off\nNodeName=%s Name=gpu File=%s/dev/fakegpu[0-%s]\n' \
            "$GPUS" "$HOST" "$STATE" "$((GPUS - 1))" > "$STATE/etc/gres.conf"
    else
        rm -f "$STATE/etc/gres.conf"
    fi
    cat > "$CONF.new" <<EOF
# Written by scripts/local-slurm.sh; edit the script, not this file.
ClusterName=multimat-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds (default 120) before it may start again; a test that
# preempts and requeues a job should not wait two minutes.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/pids/slurmctld.pid
SlurmdPidFile=$STATE/pids/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No systemd and no cgroup delegation: track processes through /proc. Slurm 22.05's slurmd still
# loads a cgroup plugin (see cgroup.conf); cgroup/v1 loads even where no cgroup fs is mounted.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
# MPICH forms its world through PMI-2; without it every srun task is an MPI world of one.
MpiDefault=pmi2
SchedulerType=sched/backfill
# Start jobs at once, and look at pending jobs (a requeued one whose hold expired) every 2 s.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Trust the CPU count below even where it exceeds the real cores.
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to scontrol for 5 minutes (tests read their state and exit codes).
MinJobAge=300
KillWait=5
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
$node_line
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    printf 'CgroupPlugin=cgroup/v1\n' > "$STATE/etc/cgroup.conf"
    if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
        rm -f "$CONF.new"
        return 1
    fi
    mv "$CONF.new" "$CONF"
    return 0
}

stop_daemons() {
    local name pid pids=()
    for name in slurmd slurmctld; do
        if pid=$(pid_of "$name"); then kill -TERM "$pid" && pids+=("$pid"); fi
        rm -f "$STATE/pids/$name.pid"
    done
    local i
    for i in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    # Two clusters started at once (the CPU and the GPU test clusters) would both find no munged
    # and race to bind its socket: one host-wide lock, and a second look once it is held.
    exec 9>/tmp/multimat-local-slurm-munge.lock
    flock -w 60 9 || die "another local-slurm.sh holds /tmp/multimat-local-slurm-munge.lock for over 60 s"
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then exec 9>&-; return 0; fi
    # No working munged: start one (as the munge user, as its package would) and remember it.
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 700 /etc/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    chmod 400 /etc/munge/munge.key
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force 9>&-
    wait_for 10 test -s /run/munge/munged.pid || die "munged did not start (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/pids/munged.pid"
    wait_for 10 sh -c 'munge -n | unmunge' || die "munge does not work (see /var/log/munge/munged.log)"
    say "munged started"
    exec 9>&-
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n 1; }

start() {
    if [ "$(id -u)" != 0 ]; then
        # Anyone may use a cluster root started; only root can start one.
        if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null && scontrol ping 2>/dev/null | grep -q "is UP"; then
            say "already up (started by root); clients need: export SLURM_CONF=$CONF"
            return 0
        fi
        die "run as root: slurmd must launch jobs (sudo $0 start)"
    fi
    local b
    for b in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch; do
        [ -x "$b" ] || die "$b is missing: install Debian's slurmctld slurmd slurm-client munge (scripts/bootstrap.sh does)"
    done
    if write_config; then
        if pid_of slurmctld >/dev/null || pid_of slurmd >/dev/null; then
            say "configuration changed: restarting this cluster's daemons"
            stop_daemons
        fi
    fi
    start_munge
    if ! pid_of slurmctld >/dev/null; then
        # -c: start with an empty job queue (jobs of an earlier session are gone anyway).
        /usr/sbin/slurmctld -c -f "$CONF" || die "slurmctld failed to start (log: $STATE/log/slurmctld.log)"
        wait_for 30 sh -c 'scontrol ping | grep -q "is UP"' ||
            { tail -n 20 "$STATE/log/slurmctld.log" >&2; die "slurmctld does not answer (log: $STATE/log/slurmctld.log)"; }
    fi
    if ! pid_of slurmd >/dev/null; then
        /usr/sbin/slurmd -f "$CONF" || die "slurmd failed to start (log: $STATE/log/slurmd.log)"
    fi
    # Wait for the node to register; one left DOWN/DRAINED by an earlier run is resumed once.
    local end=$(( $(date +%s) + 30 )) resumed=0 s
    while :; do
        s=$(node_state)
        case "$s" in
            idle | mix | alloc) break ;;
            down | drain | drng | inval | fail)
                if [ "$resumed" = 0 ]; then scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true; resumed=1; fi ;;
        esac
        if [ "$(date +%s)" -ge "$end" ]; then
            sinfo -N -l >&2 || true
            tail -n 20 "$STATE/log/slurmd.log" >&2 || true
            die "node $HOST is not up after 30 s (state '$s'; logs in $STATE/log)"
        fi
        sleep 0.2
    done
    say "up: node $HOST, $CPUS CPUs, $GPUS fake GPUs, partition debug; clients need: export SLURM_CONF=$CONF"
}

stop() {
    stop_daemons
    local pid
    # munged only if this script started it and no other Slurm daemon on the host still uses it.
    if pgrep -x 'slurmctld|slurmd|slurmdbd' >/dev/null; then
        say "leaving munged running: another Slurm on this host uses it"
    elif pid=$(pid_of munged); then
        kill -TERM "$pid"
        wait_for 10 sh -c "! [ -d /proc/$pid ]" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pids/munged.pid"
    say "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
