"""rs-transfer: do these weights transfer better? ResNet-RS transfer and video benchmarks on one runner."""
from .backbones import ResNetRS, build_backbone, create_model, list_models
from .weights import LoadReport, load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["LoadReport", "ResNetRS", "__version__", "build_backbone", "create_model", "list_models",
           "load_weights", "save_weights"]
