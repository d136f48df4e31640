"""Datasets for fine-tuning: built from feedback, logged requests or files, versioned, with lineage."""
