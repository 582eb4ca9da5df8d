"""Radiograph I/O, annotation formats, synthetic phantoms and the DataModule."""
