"""Evaluation: datasets, the three settings, tables and plots."""
