"""A package of project steps: `function: "case_pkg.enrich:flag_gas"`."""
