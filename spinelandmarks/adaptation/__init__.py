"""Bringing a pipeline to a new source: shift scores, image selection and self-training."""
