"""``emo-pretrain`` with the test-only CPU shims of tests/shims.py applied first.

Used to run layouts the product refuses on CPU, such as expert parallelism, whose Megatron all-gathers
allocate on ``torch.cuda.current_device()``. Never used by library code.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.shims import apply_cpu_shims  # noqa: E402

if __name__ == "__main__":
    apply_cpu_shims()
    from emo_plugin.cli.pretrain import main

    sys.exit(main())
