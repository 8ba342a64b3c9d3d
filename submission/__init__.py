"""Submission packaging: the Subtask 1 hub repo (script + model) and the Subtask 2 explanation files."""
