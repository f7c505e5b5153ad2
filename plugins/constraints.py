"""Built-in constraints plugin (being written)."""
