"""The `ovi` commands, one module per command group: parse, call the library, render."""
