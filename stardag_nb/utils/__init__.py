"""Small utilities shared by the engine."""
