"""The locks CI installs agree with setup.cfg: every declared dependency is pinned inside its declared bounds, and
the oldest-transformers overlay pins setup.cfg's lower bound. A failure here means: run `bash scripts/lock.sh`."""

import configparser
import pathlib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pins(lock_name):
    lines = (ROOT / "requirements" / lock_name).read_text().splitlines()
    pairs = (line.split("==") for line in lines if line.strip() and not line.startswith("#"))
    return {canonicalize_name(name): Version(version) for name, version in pairs}


def declared_requirements():
    """install_requires plus the [test] and [hf] extras scripts/setup_venv.sh installs."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].strip().splitlines()
    for extra in ("test", "hf"):
        lines += cfg["options.extras_require"][extra].split(";")
    return [Requirement(line.strip()) for line in lines if line.strip()]


def test_lock_pins_every_declared_dependency_inside_its_bounds():
    locked = pins("lock.txt")
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is declared in setup.cfg but not pinned in requirements/lock.txt"
        assert requirement.specifier.contains(locked[name], prereleases=True), (str(requirement), locked[name])


def test_oldest_overlay_pins_the_lower_transformers_bound():
    overlay = pins("lock-oldest-hf.txt")
    transformers = next(r for r in declared_requirements() if canonicalize_name(r.name) == "transformers")
    lower = min(Version(s.version) for s in transformers.specifier if s.operator == ">=")
    assert transformers.specifier.contains(overlay["transformers"])
    assert overlay["transformers"].release[:2] == lower.release[:2]
    assert overlay["transformers"] < pins("lock.txt")["transformers"]
