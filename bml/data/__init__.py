"""Data: datasets and feature extraction (frames, spectrograms)."""
