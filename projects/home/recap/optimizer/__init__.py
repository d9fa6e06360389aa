"""Heavy Ranker optimizer: per-tower Adam groups and LR schedules, embedding SGD."""
