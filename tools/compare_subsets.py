"""Compare expert-subset results of several models (outputs of tools/evaluate_subsets.py) in one table.

For each domain and the mean: the full model's held-out loss and the loss rise at each kept fraction, per model,
plus the ratio of the rises of the first model to the second (the paper's claim: EMO's rise at 25% of the
experts is a fraction of a standard MoE's).

    python tools/compare_subsets.py runs/modularity/emo/subsets/results.json \\
        runs/modularity/stdmoe/subsets/results.json --names EMO StdMoE --out runs/modularity/comparison.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: {path}: cannot read evaluate_subsets results ({error})")
    for key in ("domains", "mean"):
        if key not in results:
            raise SystemExit(f"error: {path}: missing field {key!r}; expected tools/evaluate_subsets.py output")
    return results


def rows(results: list[dict], names: list[str]) -> list[str]:
    fractions = [f for f in results[0]["mean"]["subsets"] if f != "100%"]
    header = ["domain"] + [f"{n} full loss" for n in names]
    header += [f"{n} rise @{f}" for f in fractions for n in names]
    if len(results) == 2:
        header += [f"rise ratio {names[0]}/{names[1]} @{f}" for f in fractions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    domains = sorted(results[0]["domains"])
    for domain in domains + ["mean"]:
        entries = [r["mean"] if domain == "mean" else r["domains"][domain] for r in results]
        cells = [f"**{domain}**" if domain == "mean" else domain]
        cells += [f"{e['full_loss']:.3f}" for e in entries]
        cells += [f"{e['subsets'][f]['loss_rise']:+.3f}" for f in fractions for e in entries]
        if len(results) == 2:
            for f in fractions:
                first, second = (e["subsets"][f]["loss_rise"] for e in entries)
                cells.append(f"{first / second:.2f}" if second > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of tools/evaluate_subsets.py")
    parser.add_argument("--names", nargs="+", required=True, help="one display name per results file")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    if len(args.names) != len(args.results):
        parser.error(f"--names has {len(args.names)} names for {len(args.results)} results files")
    table = "\n".join(rows([load(p) for p in args.results], args.names)) + "\n"
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
