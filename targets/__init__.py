"""Target hardware profiles, shipped as data (one YAML file per target)."""
