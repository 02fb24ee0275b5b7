"""Deterministic fixes of the slips small models make in generated networks, one module per fix.

registry.py lists them in the order they run, with their names and stages (reply, source, pre-flight);
ast_tools.py holds what several of them share. The loop applies them through `registry.apply_stage`.
"""
