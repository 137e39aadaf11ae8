"""Two-way sync: keep two replicas equal when both change, and never lose a version."""
