"""ovi's built-in plugins. Each module is an entry point in group `ovi`, like any third party's."""
