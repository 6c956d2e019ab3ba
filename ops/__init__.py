"""Operators' tools: the live monitor and the dead-letter commands (above the worker)."""
