"""Hardware and model arithmetic: specs -> operator cost -> step cost of a layout.

Layering: `catalog` reads the YAML/JSON catalogs (the only I/O here); every other module is pure
functions over frozen dataclasses in SI units.
"""
