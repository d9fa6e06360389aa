"""tml: Twitter's ML training stack (Heavy Ranker and TwHIN), rebuilt on torch and torchrec."""

__version__ = "0.1.0"
