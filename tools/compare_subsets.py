#!/usr/bin/env python3
"""``emo-compare-subsets`` from a checkout without the console scripts (emo_plugin/cli/compare_subsets.py)."""

import sys

from emo_plugin.cli.compare_subsets import main

if __name__ == "__main__":
    sys.exit(main())
