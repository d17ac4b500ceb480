"""Types, validated options, metric formulas, precision presets and tiling:
the layer every other one builds on (it imports nothing of the package
above it)."""
