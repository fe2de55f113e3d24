"""Experiments whose results go into docs/ (each reproducible by one command)."""
