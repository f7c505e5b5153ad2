"""Built-in baselines plugin (being written)."""
