"""StrictExampleValidator: TFX's ExampleValidator that stops the run on anomalies.

The TFX component lives in .component (importing TFX takes seconds).
"""
