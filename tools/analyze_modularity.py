#!/usr/bin/env python3
"""``emo-analyze-modularity`` from a checkout without the console scripts (emo_plugin/cli/analyze_modularity.py)."""

import sys

from emo_plugin.cli.analyze_modularity import main

if __name__ == "__main__":
    sys.exit(main())
