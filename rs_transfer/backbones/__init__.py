"""The backbone family: one ResNet implementation, a registry of named variants."""
from .registry import ModelSpec, UnknownModelError, build_backbone, create_model, get_spec, list_models, register_model
from .resnet import BLOCKS_PER_DEPTH, Bottleneck, ResNetRS

__all__ = ["BLOCKS_PER_DEPTH", "Bottleneck", "ModelSpec", "ResNetRS", "UnknownModelError", "build_backbone",
           "create_model", "get_spec", "list_models", "register_model"]
