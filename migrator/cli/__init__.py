"""What surrounds a run: the command line, running the chosen command, signals, the report."""
