"""CascadePusher: pushes every stage of one blessed training run as one version."""

# The TFX component lives in .component (importing TFX takes seconds; keep it out of the
# package import so the pure-Python parts stay fast to test).
