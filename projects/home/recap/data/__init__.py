"""Heavy Ranker data: Parquet in the segdense layout to RecapBatches (no TensorFlow)."""
