"""Data preparation and comparison scripts of the Heavy Ranker (run with python -m)."""
