"""Downstream consumers (the eBox)."""
