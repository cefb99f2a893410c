"""Transform steps beyond the basic column operations: reshaping, units, periods, reference
data, whole-dataset steps. Registered by the built-in plugins in ``etrmflow.builtins``."""
