#!/usr/bin/env python3
"""``emo-preprocess-data`` from a checkout without the console scripts (emo_plugin/cli/preprocess_data.py)."""

import sys

from emo_plugin.cli.preprocess_data import main

if __name__ == "__main__":
    sys.exit(main())
