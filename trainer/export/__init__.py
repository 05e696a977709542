"""Export mechanics shared by the exporters: TF Serving version layout and server configs.

`layout` writes versions atomically (metadata asset, warmup requests, signature models);
`server_configs` writes models.config, models.local.config, batching.config and
monitoring.config next to the model folders.
"""
