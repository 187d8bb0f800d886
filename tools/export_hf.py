#!/usr/bin/env python3
"""``emo-export-hf`` from a checkout without the console scripts (emo_plugin/cli/export_hf.py)."""

import sys

from emo_plugin.cli.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
