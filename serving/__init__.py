"""Serving: the signature contract, the local TF-Serving-compatible server and the thin client.

Importing this package must stay cheap: `serving.client` and `serving.contract` never
import TensorFlow. Only `serving.server` does, and it sets up the environment itself.
"""
