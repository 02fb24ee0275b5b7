"""Deterministic fixes of small models' slips in generated code: reply-level (code) and
pre-flight-guided (shapes)."""
