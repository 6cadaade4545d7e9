"""Layout search and ILP expert placement (built on hwmodels); see DESIGN.md section 5."""
