"""`pip install .` into a container's environment keeps the container's torch (and megatron-core).

NGC-style containers ship their own torch build (with Transformer Engine and apex compiled against it); a bound that
the container's torch misses makes pip replace it. The container is imitated without downloading anything: a fresh
virtual environment whose ``.pth`` file shows it this test's own site-packages (torch, megatron-core and every other
dependency installed), as ``--system-site-packages`` shows a container's. pip then resolves emo_plugin offline
(``--no-index`` and an empty ``--find-links``) with ``--dry-run --report``: any dependency pip wanted to install or
replace would have to come from the empty index, so the resolve fails, or it is in the report's install list.

The "oldest" case puts metadata of the oldest tested torch and megatron-core (requirements/lock-compat.txt) first on
the path, as a container with the oldest supported versions would have them; pip reads only metadata to resolve.
The "ngc" case does the same with the version string an NGC container's own torch build carries: a pre-release of
the oldest tested torch with a local part (``2.11.0a0+<commit>.nv<yy>.<mm>``), which a bound like ``torch>=2.11``
excludes (PEP 440 orders ``2.11.0a0`` before ``2.11``).
The control case restores the bound this project used to declare (``torch>=2.14,<2.15``): the check fails then.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OLD_TORCH_BOUND = "torch>=2.14,<2.15"
NGC_LOCAL_PART = "+8e7a2c1.nv26.11"


def install_requires(project: Path) -> list[Requirement]:
    """``project``'s install_requires as setuptools reads them (setup.cfg: ``file: emo_plugin/install_requires.txt``;
    setuptools skips a missing file silently, so an empty list means the copy lacks it)."""
    from setuptools.config.setupcfg import read_configuration

    return [Requirement(line) for line in read_configuration(project / "setup.cfg")["options"]["install_requires"]]


def oldest_tested(name: str) -> str:
    """The version CI's compat job runs (requirements/lock-compat.txt), not setup.cfg's bound: a bound raised
    past it must fail here."""
    lines = (ROOT / "requirements" / "lock-compat.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith(f"{name}=="))


def fake_installed(folder: Path, name: str, version: str) -> None:
    """What pip reads of an installed distribution: its dist-info metadata."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def project_copy(tmp_path: Path, torch_bound: str | None = None) -> Path:
    """The files pip builds emo_plugin's metadata from (install_requires as they are, or with another torch bound)."""
    project = tmp_path / "project"
    (project / "emo_plugin").mkdir(parents=True)
    (project / "emo_plugin" / "__init__.py").write_text("")
    for name in ("setup.cfg", "pyproject.toml", "README.md", "emo_plugin/install_requires.txt"):
        shutil.copy(ROOT / name, project / name)
    if torch_bound is not None:
        requirements = project / "emo_plugin" / "install_requires.txt"
        text, count = re.subn(r"^torch\b.*$", torch_bound, requirements.read_text(), flags=re.MULTILINE)
        assert count == 1, "emo_plugin/install_requires.txt has no torch line"
        requirements.write_text(text)
    declared = {r.name: str(r.specifier) for r in install_requires(project)}
    assert {"torch", "megatron-core"} <= set(declared), f"the copy declares only {declared}"
    return project


def ngc_torch_version() -> str:
    """The oldest tested torch as an NGC container's own build names it: ``2.11.0a0+<commit>.nv<yy>.<mm>``."""
    return oldest_tested("torch") + "a0" + NGC_LOCAL_PART


def container_environment(tmp_path: Path, oldest: bool, torch_version: str | None = None) -> Path:
    """A venv without packages of its own that sees this interpreter's site-packages; returns its python. With
    ``oldest``, the oldest tested torch and megatron-core come first (torch as ``torch_version`` if given)."""
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True
    ).stdout.strip()
    paths = [sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if oldest:
        overlay = tmp_path / "oldest"
        fake_installed(overlay, "torch", torch_version or oldest_tested("torch"))
        fake_installed(overlay, "megatron-core", oldest_tested("megatron-core"))
        paths.insert(0, str(overlay))
    (Path(site) / "container.pth").write_text("\n".join(dict.fromkeys(paths)) + "\n")
    return python


def resolve_offline(python: Path, project: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    empty, report = tmp_path / "empty-index", tmp_path / "report.json"
    empty.mkdir()
    command = [python, "-m", "pip", "install", "--dry-run", "--report", report, "--no-index", "--find-links", empty]
    command += ["--no-build-isolation", "--disable-pip-version-check", "--quiet", project]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    return result, json.loads(report.read_text()) if report.exists() else None


def installed_version(python: Path, name: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    "oldest, ngc", [(False, False), (True, False), (True, True)], ids=["installed", "oldest", "ngc"]
)
def test_pip_install_keeps_the_environments_torch(tmp_path: Path, oldest: bool, ngc: bool) -> None:
    torch_version = ngc_torch_version() if ngc else None
    python = container_environment(tmp_path, oldest, torch_version)
    if oldest:
        assert installed_version(python, "torch") == (torch_version or oldest_tested("torch"))
    result, report = resolve_offline(python, project_copy(tmp_path), tmp_path)
    assert result.returncode == 0, f"pip would need packages this environment lacks:\n{result.stderr}"
    planned = [(item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"]]
    assert [name for name, _ in planned] == ["emo_plugin"], f"pip would also install or replace: {planned}"


def test_the_check_fails_for_a_bound_the_torch_misses(tmp_path: Path) -> None:
    """With setup.cfg's former torch bound and the oldest tested torch installed, pip can only resolve by fetching
    another torch, which the empty index refuses."""
    python = container_environment(tmp_path, oldest=True)
    result, _ = resolve_offline(python, project_copy(tmp_path, OLD_TORCH_BOUND), tmp_path)
    assert result.returncode != 0 and "ResolutionImpossible" in result.stderr, result.stderr


def test_the_environment_sees_this_interpreters_packages(tmp_path: Path) -> None:
    """Guards the imitation itself: without it, "nothing to install" could mean pip saw nothing at all."""
    python = container_environment(tmp_path, oldest=False)
    assert installed_version(python, "torch") == installed_version(Path(sys.executable), "torch")
