#!/usr/bin/env python3
"""``emo-split-corpus`` from a checkout without the console scripts (emo_plugin/cli/split_corpus.py)."""

import sys

from emo_plugin.cli.split_corpus import main

if __name__ == "__main__":
    sys.exit(main())
