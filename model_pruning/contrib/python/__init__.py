"""contrib's `python/` package: `pruning`, `registry`, `layers`, strip tool."""
