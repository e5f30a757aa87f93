"""PyTorch files without torch: checkpoints through a restricted unpickler, and state_dict layout rules."""

__all__ = []
