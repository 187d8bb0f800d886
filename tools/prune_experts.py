#!/usr/bin/env python3
"""``emo-prune-experts`` from a checkout without the console scripts (emo_plugin/cli/prune_experts.py)."""

import sys

from emo_plugin.cli.prune_experts import main

if __name__ == "__main__":
    sys.exit(main())
