"""Serving the cascade from Triton Inference Server.

repository: the Triton model repository edgeseg writes (classifier, segmenter, BLS cascade).
cascade / stand_in: the Python-backend models that run inside the server (they import
`triton_python_backend_utils`, which only exists there, so nothing here imports them).
server: locating `tritonserver`, its Python-backend environment, and running it.
"""
