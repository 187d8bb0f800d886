"""A save that runs out of disk: one clear line naming the cause and the path, the previous checkpoint stays.

The failure is real, made by the operating system: the save folder lives on a tmpfs 1.5 checkpoints large
(``mount -t tmpfs``, permitted to root), which holds the resumed checkpoint but not the next one, so the write
fails with ENOSPC. Where mounting is not permitted, the trainer runs under a file-size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored) below one checkpoint file, so the write fails with EFBIG instead.
"""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess

from emo_plugin import checkpoint
from tests.reliability import record
from tests.training.conftest import PYTHON, REPO, base_args, env, read_metrics


def _mount_tmpfs(path, size: int) -> bool:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _tree(root) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def test_disk_full_during_save_keeps_the_previous_checkpoint(seed_run, corpus_prefix, tmp_path):
    seed = seed_run / "ckpt" / "iter_0000002"
    files = [f.stat().st_size for f in seed.rglob("*") if f.is_file()]
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, sum(files) * 3 // 2)
    try:
        save = disk / "ckpt" if mounted else tmp_path / "ckpt"
        save.mkdir(parents=True)
        shutil.copytree(seed, save / seed.name)
        (save / checkpoint.LATEST).write_text("2\n")
        before = _tree(save)
        args = base_args(corpus_prefix, tmp_path, schedule__train_iters=3, checkpoint__save=save)
        proc = subprocess.run([PYTHON, "-m", "emo_plugin.cli.pretrain", *args], cwd=REPO, env=env(), text=True,
                              capture_output=True, timeout=300,
                              preexec_fn=None if mounted else _file_size_limit(max(files) // 2))
        cause = "no space left on device" if mounted else "file too large for the file-size limit (EFBIG)"
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert (f"emo-pretrain: checkpoint error: saving {save}/iter_0000003.tmp failed: {cause}") in proc.stderr
        assert (f"the partial folder was removed and the previous checkpoint {save}/iter_0000002 is kept as the "
                "latest; free space there or point checkpoint.save at a larger file system") in proc.stderr
        assert "Traceback" not in proc.stderr
        assert sorted(k for k in read_metrics(tmp_path / "metrics.jsonl") if isinstance(k, int)) == [3]
        assert _tree(save) == before  # nothing half-written left, nothing of the old checkpoint lost
        assert checkpoint.latest_iteration(save) == 2
        if mounted:  # the table shows the real disk-full case; the EFBIG stand-in is checked above only
            record("disk full during a checkpoint save (tmpfs full: ENOSPC)",
                   seen=re.sub(r"\(\d+ bytes available\)", "(N bytes available)",
                               next(line for line in proc.stderr.splitlines() if "checkpoint error" in line)),
                   kept="the previous checkpoint, still the latest; no partial folder; exit 1", area="run lifecycle")
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
