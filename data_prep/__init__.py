"""Stage 1: the dataset — local copies, the synthetic generator, organizer subsets, and `make prepare`."""
