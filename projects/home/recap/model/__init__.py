"""Heavy Ranker model: featurization, backbones, towers, calibration and the model-with-loss."""
