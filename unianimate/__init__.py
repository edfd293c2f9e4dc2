"""UniAnimate: pose-driven human image animation with one unified video diffusion model."""

__version__ = "0.1.0"
