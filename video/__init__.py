"""Video: 3D ResNet / ResNet-RS backbones, Kinetics-400 data, clip sampling and multi-view evaluation."""
