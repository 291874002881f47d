"""What the database says was applied: the history table, the plan, status rows, and other
tools' history tables."""
