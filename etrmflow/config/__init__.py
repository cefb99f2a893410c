"""Reading project files: YAML with locations, Jinja rendering, schema checks."""
