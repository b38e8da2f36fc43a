"""Test doubles for the serving layer, not used by the service itself.

``tfserving_double`` is a TEST DOUBLE of TF Serving's C++ server: it serves real SavedModels
with TF Serving's REST and gRPC wire formats for the tfserving backend's tests.
``http_thread`` runs the cascade service in a thread on a loopback port.
"""
