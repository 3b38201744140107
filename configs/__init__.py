"""The shipped recipes: YAML run configs, installed as the package data of `dream3d.configs` (see dream3d.recipes)."""
