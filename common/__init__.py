"""Small helpers shared by every stage: atomic file writes, JSONL I/O, one-line input errors."""
