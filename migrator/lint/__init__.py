"""The hazard lint: the driver on a scratch database, and what its measurements mean."""
