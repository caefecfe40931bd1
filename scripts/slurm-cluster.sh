#!/usr/bin/env bash
# A single-node SLURM cluster on this Debian machine (controller and compute daemon on localhost), so that
# bml's workflow can run through workflow/profiles/slurm for real (tests/test_slurm.py). Needs root.
#
#   scripts/slurm-cluster.sh start    # install slurm-wlm + munge if missing, start munged, slurmctld, slurmd
#   scripts/slurm-cluster.sh status   # one line; exit 0 when the node takes jobs
#   scripts/slurm-cluster.sh stop     # stop the daemons this script started
#
# start and stop are idempotent and print nothing on success; on failure they say what failed (with the end of
# the daemon's log) and exit non-zero. The recipe (packages, munge key, the slurm.conf lines that matter) is
# the one checked with SLURM 22.05.8 on Debian 12. State and logs: $BML_SLURM_DIR
# (default /var/spool/bml-slurm).
set -euo pipefail

STATE_DIR=${BML_SLURM_DIR:-/var/spool/bml-slurm}
# Debian's SLURM reads /etc/slurm/slurm.conf by default, so plain sbatch/squeue (and the Snakemake plugin)
# find this cluster without SLURM_CONF. A slurm.conf that this script did not write is never overwritten.
CONF=/etc/slurm/slurm.conf
MARK="# Written by bml scripts/slurm-cluster.sh (start rewrites it when this host's values change)."
HOST=$(hostname -s)
PARTITION=bml
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid # munged's default pid file (munged(8))

fail() {
    echo "slurm-cluster.sh: $*" >&2
    exit 1
}

# The last lines of a log, for a failure message.
log_tail() {
    if [[ -f $1 ]]; then
        echo "--- last lines of $1:"
        tail -n 15 "$1"
    fi
}

# True when $1 is a live process whose command name is $2 (a pid file can outlive its daemon).
alive() {
    [[ -n $1 && -r /proc/$1/comm && $(cat "/proc/$1/comm") == "$2" ]]
}

pid_in() {
    [[ -f $1 ]] && cat "$1" || true
}

install_packages() {
    if [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/sbin/munged ]]; then
        return
    fi
    [[ $(id -u) == 0 ]] || fail "slurm-wlm/munge are not installed and installing them needs root"
    mkdir -p "$STATE_DIR/log"
    local log=$STATE_DIR/log/apt.log
    # Try the package lists already on the machine first; refresh them only when that fails.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$log" 2>&1; then
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } >>"$log" 2>&1 ||
            fail "apt-get install slurm-wlm munge failed
$(log_tail "$log")"
    fi
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return # a munged already answers (ours or the machine's)
    fi
    if [[ ! -s $MUNGE_KEY ]]; then
        mkdir -p /etc/munge
        # 1,024 random bytes, owner munge, mode 400 (munged refuses a key that others can read).
        dd if=/dev/urandom of=$MUNGE_KEY bs=1024 count=1 status=none
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge $MUNGE_KEY /run/munge /var/lib/munge /var/log/munge
    chmod 400 $MUNGE_KEY
    chmod 700 /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged 2>"$STATE_DIR/log/munged.err" ||
        fail "munged did not start
$(log_tail "$STATE_DIR/log/munged.err")$(log_tail /var/log/munge/munged.log)"
    touch "$STATE_DIR/munged.ours" # so that stop ends only a munged that this script started
    for _ in $(seq 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    fail "munged started but 'munge -n | unmunge' fails
$(log_tail /var/log/munge/munged.log)"
}

# slurm.conf for this host: one node with the CPUs, sockets, cores and memory that slurmd itself detects
# (`slurmd -C`, so slurmd never finds its node smaller than configured), one default partition.
write_conf() {
    local node
    node=$(/usr/sbin/slurmd -C 2>/dev/null | head -n 1)
    [[ $node == NodeName=* ]] || fail "'slurmd -C' did not print this node's configuration (got: '$node')"
    cat <<EOF
$MARK
ClusterName=bml
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups (containers and small VMs rarely allow them): track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores are the consumable resource, so two 1-CPU jobs share a 2-core node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No accounting database: sacct cannot see jobs, so status comes from squeue (profile: slurm-status-command).
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# A node that was down (a restart) comes back by itself once slurmd registers with a valid configuration.
ReturnToService=2
# Finished jobs stay visible to squeue for an hour; the plugin polls at most every 180 s
# (snakemake_executor_plugin_slurm/__init__.py: max_sleep_time) and takes a job missing from squeue as running.
MinJobAge=3600
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

# The node's state as sinfo reports it ("idle", "mixed", "down*", ...), or nothing when slurmctld does not answer
# (`timeout`: sinfo itself waits MessageTimeout, 10 s, for a controller that accepts but never replies).
node_state() {
    timeout 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true
}

# Wait until daemon $1 (slurmctld or slurmd) has written a pid file naming a live process.
wait_for_daemon() {
    for _ in $(seq 50); do # 50 x 0.1 s: the daemon forks, then writes its pid file
        alive "$(pid_in "$STATE_DIR/$1.pid")" "$1" && return
        sleep 0.1
    done
    fail "$1 exited right after starting
$(log_tail "$STATE_DIR/log/$1.err")$(log_tail "$STATE_DIR/log/$1.log")"
}

wait_for_node() {
    local state resumed=no deadline=$((SECONDS + 30)) # slurmd registers within a few seconds
    while ((SECONDS < deadline)); do
        for daemon in slurmctld slurmd; do
            alive "$(pid_in "$STATE_DIR/$daemon.pid")" "$daemon" ||
                fail "$daemon is not running
$(log_tail "$STATE_DIR/log/$daemon.log")"
        done
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing) return ;;
        down* | drain* | drained*)
            if [[ $resumed == no ]]; then
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
                resumed=yes
            fi
            ;;
        esac
        sleep 0.2
    done
    fail "node $HOST did not become idle within 30 s (sinfo state: '${state:-no answer from slurmctld}')
$(log_tail "$STATE_DIR/log/slurmctld.log")
$(log_tail "$STATE_DIR/log/slurmd.log")"
}

# Stop the daemon named in pid file $1 if it is the command $2: SIGTERM, then SIGKILL after 10 s (a slurmd that
# is still trying to register with a dead slurmctld ignores SIGTERM; measured with SLURM 22.05.8).
stop_daemon() {
    local pid
    pid=$(pid_in "$1")
    if alive "$pid" "$2"; then
        kill "$pid"
        for _ in $(seq 100); do
            alive "$pid" "$2" || break
            sleep 0.1
        done
        if alive "$pid" "$2"; then
            kill -KILL "$pid"
            sleep 0.5
        fi
        if alive "$pid" "$2"; then
            fail "$2 (pid $pid) did not stop, even after SIGKILL"
        fi
    fi
    rm -f "$1"
}

stop_slurm() {
    stop_daemon "$STATE_DIR/slurmd.pid" slurmd
    stop_daemon "$STATE_DIR/slurmctld.pid" slurmctld
}

start() {
    [[ $(id -u) == 0 ]] || fail "start needs root (munged runs as munge, slurmctld and slurmd as root)"
    install_packages
    if [[ -f $CONF ]] && [[ $(head -n 1 "$CONF") != "# Written by bml scripts/slurm-cluster.sh"* ]]; then
        fail "$CONF exists and was not written by this script; refusing to overwrite it"
    fi
    mkdir -p "$STATE_DIR/log" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" /etc/slurm
    start_munge
    local new=$STATE_DIR/slurm.conf.new
    write_conf >"$new"
    local ctld_pid slurmd_pid
    ctld_pid=$(pid_in "$STATE_DIR/slurmctld.pid")
    slurmd_pid=$(pid_in "$STATE_DIR/slurmd.pid")
    if alive "$ctld_pid" slurmctld && alive "$slurmd_pid" slurmd && cmp -s "$new" "$CONF"; then
        rm -f "$new"
        wait_for_node # already running with this configuration
        return
    fi
    stop_slurm # a half-started or differently configured cluster starts again from scratch
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        fail "a slurmctld or slurmd not started by this script is running (pids: $(pgrep -d ' ' -x 'slurmctld|slurmd')); stop it first"
    fi
    mv "$new" "$CONF"
    /usr/sbin/slurmctld 2>>"$STATE_DIR/log/slurmctld.err" ||
        fail "slurmctld did not start
$(log_tail "$STATE_DIR/log/slurmctld.err")$(log_tail "$STATE_DIR/log/slurmctld.log")"
    wait_for_daemon slurmctld
    /usr/sbin/slurmd 2>>"$STATE_DIR/log/slurmd.err" ||
        fail "slurmd did not start
$(log_tail "$STATE_DIR/log/slurmd.err")$(log_tail "$STATE_DIR/log/slurmd.log")"
    wait_for_daemon slurmd
    wait_for_node
}

stop() {
    stop_slurm
    # Without its controller, every SLURM client waits out MessageTimeout (about 9 s) before failing; the
    # Snakemake SLURM plugin asks `scontrol show config` when it is imported, so every `snakemake` would pay
    # that. With no slurm.conf the clients fail at once: remove the one this script wrote.
    if [[ -f $CONF ]] && [[ $(head -n 1 "$CONF") == "# Written by bml scripts/slurm-cluster.sh"* ]]; then
        rm -f "$CONF"
    fi
    if [[ -f $STATE_DIR/munged.ours ]]; then
        stop_daemon $MUNGE_PID munged
        rm -f "$STATE_DIR/munged.ours"
    fi
}

status() {
    local state daemon
    for daemon in slurmctld slurmd; do
        if ! alive "$(pid_in "$STATE_DIR/$daemon.pid")" "$daemon"; then
            echo "down: $daemon is not running (state and logs: $STATE_DIR)"
            return 1
        fi
    done
    state=$(node_state)
    case $state in
    idle | mixed | allocated | completing)
        echo "up: node $HOST $state, partition $PARTITION, $(sinfo -h -n "$HOST" -o '%c CPUs, %m MB')"
        ;;
    *)
        echo "down: node $HOST state '${state:-no answer from slurmctld}' (state and logs: $STATE_DIR)"
        return 1
        ;;
    esac
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*) fail "usage: $0 start|stop|status" ;;
esac
