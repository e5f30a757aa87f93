"""What users get on disk: image and JSON files written atomically, image grids, matplotlib figures."""

__all__ = []
