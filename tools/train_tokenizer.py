#!/usr/bin/env python3
"""``emo-train-tokenizer`` from a checkout without the console scripts (emo_plugin/cli/train_tokenizer.py)."""

import sys

from emo_plugin.cli.train_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
