"""The package's command-line tools, one module each with ``main(argv=None) -> int``.

``setup.cfg`` installs each as a console script (``emo-export-hf`` runs ``emo_plugin.cli.export_hf:main``);
``runner.py`` is the pattern they share: help that reads like documentation, and one-line errors.
"""
