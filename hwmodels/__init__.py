"""Hardware and model arithmetic: specs -> operator cost -> step cost of a layout.

Layering: `catalog` reads the YAML/JSON catalogs and `ingest` the traffic files (request traces, routing
statistics): the only I/O here; every other module is pure functions over frozen dataclasses in SI units.
"""
