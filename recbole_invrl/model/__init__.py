"""Models: the content encoder, the item-item graph, and the recommenders."""
