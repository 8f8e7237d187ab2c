"""Floe: land files from many hosts into Apache Iceberg as one atomic snapshot per job."""
