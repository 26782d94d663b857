"""bone: Bone (Block-Affine / DiSHA / MiSS) parameter-efficient fine-tuning."""
from .config import BoneConfig

__all__ = ["BoneConfig"]
__version__ = "0.1.0"
