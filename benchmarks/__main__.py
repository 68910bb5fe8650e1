"""``python -m benchmarks``: the end-to-end benchmarks (:mod:`benchmarks.suite`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import report, suite


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(suite.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller, shorter runs")
    parser.add_argument("--only", help="comma-separated figures to run (1-8)")
    parser.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="N",
        help="run figures 2 and 7 a second time with N CPU-bound processes beside both stacks",
    )
    parser.add_argument("--profile", action="store_true", help="also profile figures 1 and 2")
    parser.add_argument(
        "--repeats", type=int, help="chatcore/bare-bones pairs for figure 1 (default 3; quick 1)"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default: benchmarks/results/)")
    parser.add_argument("--show", type=Path, help="print the tables of a saved JSON, run nothing")
    args = parser.parse_args(argv)
    if args.busy < 0:
        parser.error("--busy must be 0 or more")
    if args.show is not None:
        print(report.render(json.loads(args.show.read_text())))
        return 0
    args.argv = argv
    result = suite.run(args)
    suite.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = result["started_at"].replace(":", "").replace("+0000", "Z")
    paths = [args.output] if args.output else [suite.RESULTS / f"suite-{stamp}.json"]
    if not args.output:
        paths.append(suite.RESULTS / ("suite-quick.json" if args.quick else "suite.json"))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    print()
    print(report.render(result))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
