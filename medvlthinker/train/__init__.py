"""Training: SFT with TRL, the RL preflight, checkpoint merging."""
