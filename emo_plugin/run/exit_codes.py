"""The trainer's exit codes: the contract a job script (examples/slurm/) acts on.

* ``FINISHED`` (0): iteration == schedule.train_iters and the final checkpoint is saved; do not requeue.
* ``RESUMABLE`` (75, ``EX_TEMPFAIL`` of sysexits.h): stopped early (SIGTERM, SIGUSR1 or the run-time budget)
  after saving a checkpoint the next start resumes from; requeue.
* anything else: an error; 2 = bad config or input, 3 = non-finite training (``nan_policy``), 1 = other errors
  (a failed checkpoint write among them). Do not requeue blindly.

Every rank returns the same code (the stop decision is agreed by an all-reduce). Launch ranks with srun (as
examples/slurm/pretrain.sbatch does) or plain python to see them: torchrun turns any non-zero worker exit into
its own failure (exit 1).
"""

FINISHED = 0
ERROR = 1
CONFIG_ERROR = 2
NON_FINITE = 3
RESUMABLE = 75

EPILOG = """\
exit codes: 0 finished (iteration == schedule.train_iters, final checkpoint saved); 75 stopped early after saving
a resumable checkpoint (SIGTERM or SIGUSR1, treated alike, or schedule.exit_duration_minutes) - requeue and the
run resumes from checkpoint.save; 2 config or input error; 3 non-finite training (nan_policy); 1 other errors
(e.g. a checkpoint write failed: disk full; a stop request after training steps without checkpoint.save).
torchrun reports any non-zero worker exit as 1: launch with srun or python to see 75.
"""
