#!/usr/bin/env python3
"""``emo-bench-router`` from a checkout without the console scripts (emo_plugin/cli/bench_router.py)."""

import sys

from emo_plugin.cli.bench_router import main

if __name__ == "__main__":
    sys.exit(main())
