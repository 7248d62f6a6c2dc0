"""Offline data preparation: corpus readers and the TFDS dataset builder."""
