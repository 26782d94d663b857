"""TEST-ONLY launcher: `bone` under a real Accelerate FSDP2 launch on CPU processes (gloo).

    python -m accelerate.commands.launch --config_file FSDP2.yaml tests/train/accelerate_cpu_fsdp.py train ...

What it lifts, and why: Accelerate 1.15 chooses FSDP only for GPU-like devices. In
`AcceleratorState.__init__` the FSDP branch (`distributed_type = FSDP`, keep the
FullyShardedDataParallelPlugin, hand it the mixed precision) sits inside
`elif self.distributed_type in [MULTI_GPU, MULTI_NPU, MULTI_XPU, ...]`, and a CPU process group is
MULTI_CPU, so on a machine without a GPU an FSDP launch silently trains as DDP over gloo. This
module wraps that `__init__`: when the state it just built is MULTI_CPU although an FSDP plugin was
given (by `accelerate launch` through ACCELERATE_USE_FSDP / FSDP_* variables, which `Accelerator`
turns into the plugin), it takes that same branch's three steps. Nothing else is touched: the
launcher, the plugin, the process group (gloo), `Accelerator.prepare` -> `fsdp2_prepare_model`
(`fully_shard`), `clip_grad_norm_`, `no_sync`, `unwrap_model`, `reduce` and all of bone run
unchanged. FSDP2 itself (`fully_shard`, DTensor) supports CPU tensors and gloo.

On GPUs no shim is used: `accelerate launch --config_file ... -m bone train ...` selects FSDP itself.
"""
from __future__ import annotations

import functools
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_original_init = AcceleratorState.__init__


@functools.wraps(_original_init)
def _init_allowing_cpu_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    fresh = not AcceleratorState._shared_state  # only the first (state-building) call may change it
    _original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fresh and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        # the FSDP branch of AcceleratorState.__init__, which Accelerate 1.15 reserves for GPU-like devices
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


AcceleratorState.__init__ = _init_allowing_cpu_fsdp

if __name__ == "__main__":
    from bone.cli import main

    sys.exit(main())
