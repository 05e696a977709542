"""Serving: the local TF-Serving-compatible server and the thin client (the contract is recsys_common.contract).

Importing this package must stay cheap: `serving.client` never imports TensorFlow. Only
`serving.server` does, and it sets up the environment itself (recsys_common.tf_env).
Nothing here imports `trainer`.
"""
