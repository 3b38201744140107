"""The C++/CUDA kernel sources, installed as the package data of `dream3d.extensions` (see dream3d.recipes)."""
