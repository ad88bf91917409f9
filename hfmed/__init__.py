"""hfmed."""
