#!/usr/bin/env python
"""Import an EMO Hugging Face folder (AI2 layout) as a Megatron dist checkpoint for any TP/EP/PP.

  python tools/import_hf.py --hf allenai/EMO-local-copy --output ckpt/emo-import --target-expert-parallel-size 8

With 127 routed experts and EP 8 the router gets 1 inert expert (zero weights, never selected); train with
--emo.num_inert_experts=1 (the summary prints the value).
"""

import argparse
import json
import sys

from emo_plugin.convert import ConversionError, import_from_hf
from emo_plugin.convert.output_dir import refuse_overlap


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="local HF folder (config.json + safetensors)")
    p.add_argument("--output", required=True, help="checkpoint root to write (iter_0000000 + latest file)")
    p.add_argument("--target-expert-parallel-size", type=int, default=1, help="pad routed experts to a multiple of this")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="fp32")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    args = p.parse_args(argv)
    try:
        refuse_overlap(args.output, [args.hf])  # before the model is built
        summary = import_from_hf(
            args.hf, args.output, target_expert_parallel_size=args.target_expert_parallel_size,
            dtype=args.dtype, force=args.force,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
