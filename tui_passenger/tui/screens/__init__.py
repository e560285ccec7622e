"""Modal screens: confirmation and help."""
