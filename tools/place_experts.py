#!/usr/bin/env python3
"""``emo-place-experts`` from a checkout without the console scripts (emo_plugin/cli/place_experts.py)."""

import sys

from emo_plugin.cli.place_experts import main

if __name__ == "__main__":
    sys.exit(main())
