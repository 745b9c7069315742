"""How a training step is computed over data: the DataFrame engine (and later baselines)."""
