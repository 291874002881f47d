"""Applying the pending files: the applier, its round trips, retries, progress and repairs."""
