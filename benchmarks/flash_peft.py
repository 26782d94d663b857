"""PEFT MiSS with and without `bone.flash`, next to bone's own layers (issue 12's probe shape): a
thin wrapper of `bone bench --shape small` with the flash methods; extra options go to bone bench.

    PYTHONPATH=src python benchmarks/flash_peft.py --threads 2 --repeats 7 [--out DIR]
"""
from __future__ import annotations

import sys

from bone.bench import main

METHODS = ("frozen,peft-bat,peft-bat+flash,bone-col,peft-shard,peft-shard+flash,bone-shard,"
           "peft-mini,peft-mini+flash,bone-mini")

if __name__ == "__main__":
    sys.exit(main(["--shape=small", f"--methods={METHODS}", "--rss-steps=0", *sys.argv[1:]]))
