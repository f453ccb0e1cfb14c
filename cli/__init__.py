"""The `tmv` command line (tinymvlm.cli): the only layer that prints. Commands import heavy libraries
only when they run; they may import any package."""
