"""Where models come from (tiny, packaged, random weights, local, hub) and how workers load them."""

from pathlib import Path

# Shipped config.json copies of the architectures bench knows without weights (planner, random weights).
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
