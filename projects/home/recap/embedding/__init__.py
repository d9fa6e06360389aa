"""Large and small embedding table configs of the Heavy Ranker."""
