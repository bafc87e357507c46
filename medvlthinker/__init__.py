"""MedVLThinker reproduction: medical multimodal reasoning with Qwen2.5-VL (see docs/development.md)."""

__version__ = "0.1.0"
