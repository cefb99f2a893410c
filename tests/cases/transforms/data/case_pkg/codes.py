"""Constants shared by the package's step modules."""

GAS = "NG"
