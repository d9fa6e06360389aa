"""The Heavy Ranker of the For You timeline: data, model, training and scoring.

Importing it changes nothing in the process: the entry points set Arrow's allocator policy
(`tml.common.allocator.keep_arrow_freed_memory`) before they import the data pipeline.
"""
