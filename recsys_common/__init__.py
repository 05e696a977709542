"""What the trainer and the server share, and nothing else: both import it, it imports neither.

    contract   model names, signature inputs/outputs, artefact names (pure Python, no TensorFlow)
    tf_env     the TensorFlow environment, set on import before TensorFlow loads
    layout     the version-folder layout of a model base path (pure Python)
    server_config  TF Serving's batching defaults and metrics path, written by one and read by the other
    warmup_log the warmup-request file: where it lives and how it is read (TensorFlow)
"""
