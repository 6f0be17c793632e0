"""Drill records: what each drill restored, how long it took, what it found (every engine)."""
