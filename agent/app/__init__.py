"""What a user runs: options, the `nasloop` CLI, search, train-best, and the LangGraph Studio entry."""
