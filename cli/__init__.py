"""The `tmv` command line (tinymvlm.cli): commands import heavy libraries only when they run."""
