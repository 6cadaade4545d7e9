"""Cited catalogs of hardware, clusters, models, workloads and prices, as YAML/JSON data.

This package holds data only; `hwmodels.catalog` reads it into typed objects. It is an import
package so that an installed (non-editable) moeplan finds the files next to this module.
"""
from pathlib import Path

CATALOG_DIR = Path(__file__).resolve().parent
