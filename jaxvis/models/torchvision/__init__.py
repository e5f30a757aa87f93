"""torchvision's architectures (and their weight-key rules) as Flax modules with torchvision's layer names."""

__all__ = []
