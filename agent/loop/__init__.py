"""The loop's nodes (Improver, Generator, Evaluator, repair, select), evaluation at the run's fidelity,
and the escape from repeated failures."""
