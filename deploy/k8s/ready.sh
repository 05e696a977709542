#!/bin/bash
# Readiness: every model named in the model config ($1) has a version AVAILABLE, asked on the REST
# port ($2) with GET /v1/models/<name> (bash's /dev/tcp: the TF Serving images have no curl).
config="${1:?usage: ready.sh MODELS_CONFIG [REST_PORT]}"
port="${2:-8501}"
models=$(sed -n 's/^[[:space:]]*name:[[:space:]]*"\([^"]*\)".*/\1/p' "$config")
[ -n "$models" ] || { echo "no model names in $config" >&2; exit 1; }
for model in $models; do
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  printf 'GET /v1/models/%s HTTP/1.0\r\n\r\n' "$model" >&3
  if ! grep -q '"AVAILABLE"' <&3; then
    echo "model $model has no AVAILABLE version" >&2
    exit 1
  fi
  exec 3<&-
done
