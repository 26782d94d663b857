"""`bone train`: the TrainConfig schema and its loader (`bone.train.trainer` is the Accelerate recipe)."""
from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
