"""Converters from unified rows to the training formats: verl RL parquet and TRL SFT conversations."""
