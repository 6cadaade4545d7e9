"""Traffic files in: request traces and routing statistics, read from paths or bytes up to a size limit.

- source: `Source`, a file or folder on disk or in memory, and MAX_FILE_BYTES, the size limit per file;
- safe_load: parsers that never execute code from a file (JSON lines, literals, safetensors, restricted pickles);
- requests: `RequestTrace`, `load_trace` (Mooncake, Azure, length CSV, ServeGen), `synthetic_trace`;
- routing: `RoutingTrace`, `read_routing` / `read_counts` (a file in its own shape), `load_routing` (mapped
  onto a model), `fit_to_model`, `save_counts`, `synthetic_routing`, `layer_cv`;
- routing_formats: one reader per routing statistics format, the same for the spec, `moeplan place`,
  `moeplan simulate` and the dashboard.
The planner, the simulator, the CLI and the dashboard all read traffic through these modules.
"""
