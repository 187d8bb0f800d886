"""Print the installed version of every package a lock file pins, and fail if any differs from the lock.

    python scripts/check_lock.py requirements/lock.txt [--overlay PATH]

Run by scripts/setup_venv.sh (and for the oldest-transformers overlay by scripts/test.sh), so the CI log shows
exactly which versions ran. Packages installed but not pinned by the lock are listed as a note: they come from
a manual install, or setup.cfg gained a dependency and the lock needs `bash scripts/lock.sh`.
"""

import argparse
import importlib.metadata
import re
import sys


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    pins = {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalized(name)] = version
    return pins


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock")
    parser.add_argument("--overlay", help="only this folder's packages are expected to match (pip --target)")
    args = parser.parse_args(argv)
    pins = read_lock(args.lock)
    paths = [args.overlay] if args.overlay else None
    installed = {}
    for dist in importlib.metadata.distributions(**({"path": paths} if paths else {})):
        installed.setdefault(normalized(dist.metadata["Name"]), dist.version)  # first on sys.path wins, as import
    wrong = {name: (want, installed.get(name)) for name, want in pins.items() if installed.get(name) != want}
    print(f"Python {sys.version.split()[0]}; installed vs {args.lock}:")
    for name, want in sorted(pins.items()):
        got = installed.get(name)
        print(f"  {name}=={got}" + ("" if got == want else f"   <-- lock pins {want}"))
    extra = sorted(set(installed) - set(pins) - {"pip", "emo-plugin"})
    if extra and not args.overlay:
        print(f"  not in the lock (manual installs, or run scripts/lock.sh): {', '.join(extra)}")
    if wrong:
        print(f"{len(wrong)} package(s) differ from {args.lock}: re-run scripts/setup_venv.sh", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
