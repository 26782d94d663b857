"""`bone train`: the TrainConfig schema, its loader, and the Accelerate training recipe."""
from .config import TrainConfig
from .options import ConfigError, load_config

__all__ = ["ConfigError", "TrainConfig", "load_config"]
