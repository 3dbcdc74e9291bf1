"""Curated demo gene sets, shipped with the package as ``permenrich.demo_data``.

See README.md here for their sources; ``demo_cohort.h5ad`` is generated, not shipped.
"""
