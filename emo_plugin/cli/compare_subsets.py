"""Compare expert-subset results of several models (outputs of emo-evaluate-subsets) in one table.

For each domain and the mean: the full model's held-out loss and the loss rise at each kept fraction, per model,
plus the ratio of the rises of the first model to the second (the paper's claim: EMO's rise at 25% of the
experts is a fraction of a standard MoE's).

example:
    emo-compare-subsets runs/modularity/emo/subsets/results.json \\
        runs/modularity/stdmoe/subsets/results.json --names EMO StdMoE --out runs/modularity/comparison.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emo_plugin.cli.runner import documented_parser, run_command
from emo_plugin.errors import AnalysisError


def load(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise AnalysisError(f"{path}: cannot read emo-evaluate-subsets results ({error})") from None
    for key in ("domains", "mean"):
        if key not in results:
            raise AnalysisError(f"{path}: missing field {key!r}; expected emo-evaluate-subsets output")
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


def build_parser() -> argparse.ArgumentParser:
    parser = documented_parser(__doc__, "emo-compare-subsets")
    parser.add_argument("results", type=Path, nargs="+", help="results.json files of emo-evaluate-subsets")
    parser.add_argument("--names", nargs="+", required=True, help="one display name per results file")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    return parser


def compare(args: argparse.Namespace) -> None:
    if len(args.names) != len(args.results):
        raise AnalysisError(f"--names has {len(args.names)} names for {len(args.results)} results files")
    table = "\n".join(rows([load(p) for p in args.results], args.names)) + "\n"
    print(table, end="")
    if args.out:
        args.out.write_text(table)


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), compare, argv)
