"""dream3d: text-to-3D by score distillation, on CPU and on CUDA."""

__version__ = "0.1.0"
