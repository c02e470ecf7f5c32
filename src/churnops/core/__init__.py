"""Pure domain: specs, params, features, metrics, thresholds. No I/O frameworks."""
