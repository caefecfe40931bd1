"""Writes what a SLURM job received (job id, CPUs per task, the --threads its rule passed, partition, node)
and when its own work started and ended, as JSON, for tests/test_slurm.py."""

import argparse
import json
import os
import socket
import time

WORK_SECONDS = 1.0  # the job's own run time: long enough to measure, short enough to keep the test fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True, help="the rule's {threads}, as bml train gets it")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    start = time.time()
    time.sleep(WORK_SECONDS)
    record = {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
        "slurm_job_partition": os.environ.get("SLURM_JOB_PARTITION"),
        "host": socket.gethostname(),
        "threads": args.threads,
        "start": start,
        "end": time.time(),
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
