#!/usr/bin/env python3
"""``emo-exclude-experts`` from a checkout without the console scripts (emo_plugin/cli/exclude_experts.py)."""

import sys

from emo_plugin.cli.exclude_experts import main

if __name__ == "__main__":
    sys.exit(main())
