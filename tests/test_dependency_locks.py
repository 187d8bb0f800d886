"""The locks CI installs agree with setup.cfg: every declared dependency is pinned inside its declared bounds, the
oldest-transformers overlay pins setup.cfg's lower bound, and the compat lock pins torch's and megatron-core's.
A failure here means: run `bash scripts/lock.sh`."""

import pathlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pins(lock_name):
    lines = (ROOT / "requirements" / lock_name).read_text().splitlines()
    pairs = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonicalize_name(name): Version(version) for name, version in pairs}


def declared_requirements():
    """install_requires (setup.cfg: ``file: emo_plugin/install_requires.txt``) plus the [test] and [hf] extras
    scripts/setup_venv.sh installs, as setuptools reads them."""
    from setuptools.config.setupcfg import read_configuration

    options = read_configuration(ROOT / "setup.cfg")["options"]
    lines = list(options["install_requires"])
    for extra in ("test", "hf"):
        lines += options["extras_require"][extra]
    assert any(canonicalize_name(Requirement(line).name) == "megatron-core" for line in lines), lines
    return [Requirement(line.strip()) for line in lines if line.strip()]


@pytest.mark.parametrize("lock_name", ["lock.txt", "lock-compat.txt"])
def test_lock_pins_every_declared_dependency_inside_its_bounds(lock_name):
    locked = pins(lock_name)
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared in setup.cfg but not pinned in requirements/{lock_name}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (str(requirement), locked[name])


def test_oldest_overlay_pins_the_lower_transformers_bound():
    overlay = pins("lock-oldest-hf.txt")
    transformers = next(r for r in declared_requirements() if canonicalize_name(r.name) == "transformers")
    lower = min(Version(s.version) for s in transformers.specifier if s.operator == ">=")
    assert transformers.specifier.contains(overlay["transformers"])
    assert overlay["transformers"].release[:2] == lower.release[:2]
    assert overlay["transformers"] < pins("lock.txt")["transformers"]


@pytest.mark.parametrize("name", ["torch", "megatron-core"])
def test_compat_lock_pins_the_lower_bound(name):
    """CI's compat job (scripts/test_compat.sh) runs exactly setup.cfg's oldest torch and megatron-core. A bound on
    a pre-release (``torch>=2.11.0a0``, so that NGC containers' ``2.11.0a0+...`` builds qualify) names the release
    it precedes."""
    requirement = next(r for r in declared_requirements() if canonicalize_name(r.name) == name)
    lower = next(Version(s.version) for s in requirement.specifier if s.operator == ">=")
    assert pins("lock-compat.txt")[name] == Version(lower.base_version), "requirements/compat.in and setup.cfg disagree"
