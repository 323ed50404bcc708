#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, from Debian's packages (slurm-wlm, munge), for
# trying `run --slurm` and for CI's end-to-end test. Needs root (the daemons run as root).
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm munge slurmdbd mariadb-server
#                                    (when missing)
#   scripts/slurm-local.sh start     munge key, slurm.conf, munged, MariaDB + slurmdbd (job
#                                    accounting, so that sacct answers), slurmctld, slurmd;
#                                    waits until `sinfo` shows the node idle
#   scripts/slurm-local.sh stop      stops the daemons this script started
#
# One node `localhost` with 2 CPUs in one partition `debug`; state, spool, database, logs and
# pid files under $SLURM_LOCAL_DIR (default /tmp/verillm-slurm). The configuration is written
# to /etc/slurm/slurm.conf and slurmdbd.conf (where every Slurm command looks) unless files
# there were not written by this script. The controller also keeps finished jobs for an hour
# (MinJobAge), so `scontrol show job` knows them too.
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/verillm-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by verillm-tui scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }

install() {
    if command -v sbatch >/dev/null 2>&1 && command -v slurmdbd >/dev/null 2>&1 &&
        command -v mariadbd >/dev/null 2>&1; then
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; not replacing it"
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/spool" "$STATE/log"
    if [ -e /etc/slurm/slurmdbd.conf ] && ! grep -qF "$MARKER" /etc/slurm/slurmdbd.conf; then
        die "/etc/slurm/slurmdbd.conf exists and was not written by this script; not replacing it"
    fi
    cat >"$CONF" <<EOF
$MARKER
ClusterName=verillm-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
KillWait=5
MaxArraySize=10001
NodeName=localhost CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=verillm-local
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
    chmod 600 /etc/slurm/slurmdbd.conf
}

# A private MariaDB (its data under $STATE/db) for slurmdbd; on the default socket, which is
# where slurmdbd's client library looks for StorageHost=localhost.
start_database() {
    mkdir -p "$STATE/db" "$STATE/mysql" /run/mysqld
    chown mysql:mysql "$STATE/db" "$STATE/mysql" /run/mysqld
    if [ ! -d "$STATE/db/mysql" ]; then
        mariadb-install-db --user=mysql --datadir="$STATE/db" >"$STATE/log/mariadb-install.log" 2>&1
    fi
    if ! { [ -f "$STATE/mysql/mysqld.pid" ] && kill -0 "$(cat "$STATE/mysql/mysqld.pid")" 2>/dev/null; }; then
        mariadbd --user=mysql --datadir="$STATE/db" --socket=/run/mysqld/mysqld.sock \
            --pid-file="$STATE/mysql/mysqld.pid" --skip-networking \
            --log-error="$STATE/mysql/mysqld.log" >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 30); do
        mariadb --socket=/run/mysqld/mysqld.sock -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.5
    done
    mariadb --socket=/run/mysqld/mysqld.sock -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' \
        IDENTIFIED BY 'verillm-local'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" ||
        die "MariaDB did not start (see $STATE/mysql/mysqld.log)"
    { [ -f "$STATE/slurmdbd.pid" ] && kill -0 "$(cat "$STATE/slurmdbd.pid")" 2>/dev/null; } || slurmdbd
    for _ in $(seq 1 30); do
        sacctmgr -n list cluster >/dev/null 2>&1 && break
        sleep 0.5
    done
    # -P: names are not cut to the column width.
    sacctmgr -n -P list cluster format=cluster | grep -qx verillm-local ||
        sacctmgr -i add cluster verillm-local
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! pgrep -u munge -x munged >/dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
    munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"
}

start() {
    command -v slurmctld >/dev/null 2>&1 || die "slurmctld not installed (run: $0 install)"
    write_conf
    start_munge
    start_database
    [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null ||
        slurmctld -c -f "$CONF"
    [ -f "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null ||
        slurmd -f "$CONF"
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n localhost -o '%t' 2>/dev/null || true)
        case "$state" in
            idle*) echo "slurm-local: node localhost idle ($STATE)"; return ;;
            down*|drain*|inval*) scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    die "the node did not become idle within 60 s (state: ${state:-none})"
}

stop_pidfile() {
    local file=$1
    if [ -f "$file" ]; then
        local pid
        pid=$(cat "$file")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        rm -f "$file"
    fi
}

stop() {
    stop_pidfile "$STATE/slurmd.pid"
    stop_pidfile "$STATE/slurmctld.pid"
    stop_pidfile "$STATE/slurmdbd.pid"
    stop_pidfile "$STATE/mysql/mysqld.pid"
    # munged: only the one this script would have started (its pid file under /run/munge).
    stop_pidfile /run/munge/munged.pid
    echo "slurm-local: stopped"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
