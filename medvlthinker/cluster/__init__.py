"""Whether a node can run the recipe (the cluster check) and the offline wheelhouse of the gpu extra."""
