"""The run directory: the store (results, trace, candidates), replay, report and fork."""
