#!/usr/bin/env bash
# A real single-node Slurm on localhost for CI (Debian's slurmctld, slurmd, munge; no
# systemd): source this file; it installs what is missing, starts the daemons in the
# background, waits until the node is idle and stops them on exit (trap).
# Pitfalls it avoids: kill_invalid_depend lives under DependencyParameters in Slurm 22.05 (a
# failed array would otherwise leave the afterok job pending forever); batch_sched_delay=0
# so a tiny array does not start in 3 s waves; daemons stopped by their pid files (slurmd
# first), never by name, escalating to SIGKILL.
SLURM_D=${SLURM_D:-/tmp/goodhart-slurm-ci}
rm -rf "$SLURM_D"; mkdir -p "$SLURM_D/state" "$SLURM_D/spool" "$SLURM_D/log"
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1 || ! command -v sbatch >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p /etc/slurm /run/munge && chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
SLURM_MUNGE_PID=
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    SLURM_MUNGE_PID=$(cat /run/munge/munged.pid)
fi
NODE=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]*/NodeName=localhost/')
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_D/state
SlurmdSpoolDir=$SLURM_D/spool
SlurmctldPidFile=$SLURM_D/slurmctld.pid
SlurmdPidFile=$SLURM_D/slurmd.pid
SlurmctldLogFile=$SLURM_D/log/slurmctld.log
SlurmdLogFile=$SLURM_D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
DependencyParameters=kill_invalid_depend
$NODE
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
slurm_stop() {
    local f pid
    for f in "$SLURM_D/slurmd.pid" "$SLURM_D/slurmctld.pid"; do
        pid=$(cat "$f" 2>/dev/null) || continue
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    [ -n "$SLURM_MUNGE_PID" ] && kill "$SLURM_MUNGE_PID" 2>/dev/null || true
}
trap slurm_stop EXIT
/usr/sbin/slurmctld && /usr/sbin/slurmd -N localhost
for _ in $(seq 60); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.5; done
[ "$(sinfo -h -o %T 2>/dev/null)" = idle ] || { echo "error: Slurm did not come up; logs in $SLURM_D/log" >&2; tail -20 "$SLURM_D"/log/*.log >&2; exit 1; }
echo "slurm: single node localhost idle ($(sinfo -h -o '%c CPUs'))"
