"""Framework-free ML core: torch, torchvision, numpy and Pillow, never Django."""
