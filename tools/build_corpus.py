#!/usr/bin/env python3
"""``emo-build-corpus`` from a checkout without the console scripts (emo_plugin/cli/build_corpus.py)."""

import sys

from emo_plugin.cli.build_corpus import main

if __name__ == "__main__":
    sys.exit(main())
