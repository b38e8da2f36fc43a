"""CascadeEvaluator: end-to-end recall of both exported stages, sliced, and a blessing."""

# The TFX component lives in .component (importing TFX takes seconds; keep it out of the
# package import so the pure-Python parts stay fast to test).
