"""An entry point whose import fails (tests): ovi reports it by name and keeps working."""

raise ImportError("this plugin cannot be imported, on purpose")
