#!/usr/bin/env python3
"""``emo-import-hf`` from a checkout without the console scripts (emo_plugin/cli/import_hf.py)."""

import sys

from emo_plugin.cli.import_hf import main

if __name__ == "__main__":
    sys.exit(main())
