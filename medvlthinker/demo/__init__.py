"""Offline builders for the demo and the tests: synthetic rows, the tiny random Qwen2.5-VL, the learnable demo task."""
