"""Jobs built on the engine and the models: atlases (and their page, dataset examples and
multi-process runs), DeepDream, feature maps, weight reports and class-activation maps."""

__all__ = []
