"""Transports move bytes between endpoints; the planner decides what and when."""
