#!/usr/bin/env python3
"""``emo-select-experts`` from a checkout without the console scripts (emo_plugin/cli/select_experts.py)."""

import sys

from emo_plugin.cli.select_experts import main

if __name__ == "__main__":
    sys.exit(main())
