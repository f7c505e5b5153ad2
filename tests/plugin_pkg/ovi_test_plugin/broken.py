"""An entry point whose import fails: ovi must report it by name and keep working."""

raise ImportError("this plugin is broken on purpose")
