"""Hardware and model arithmetic: specs -> operator cost -> step cost of a layout.

Layering: `catalog` reads the cited YAML/JSON catalogs and `ingest` the traffic files (request traces, routing
statistics, from paths or bytes, with a size limit); `calibrate` fits and validates the operator models against
published tables and deployments (its fits are stored data the step model reads through
`calibrate.OperatorCosts`); every other module is pure functions over frozen dataclasses in SI units.
"""
