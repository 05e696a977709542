"""gRPC stubs for TF Serving's PredictionService and ModelService over the vendored messages.

Hand-written rather than generated: the vendored messages live in renamed packages, and
generated stubs would derive the method paths from those names. TF Serving's paths are
`/tensorflow.serving.<Service>/<Method>`. Works with `grpc.Channel` and `grpc.aio.Channel`.
"""

from __future__ import annotations

from typing import Any

from serving._protos.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


class PredictionServiceStub:
    """Predict and GetModelMetadata of `tensorflow.serving.PredictionService`."""

    def __init__(self, channel: Any) -> None:
        self.Predict = channel.unary_unary(
            f"/{PREDICTION_SERVICE}/Predict",
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        self.GetModelMetadata = channel.unary_unary(
            f"/{PREDICTION_SERVICE}/GetModelMetadata",
            request_serializer=get_model_metadata_pb2.GetModelMetadataRequest.SerializeToString,
            response_deserializer=get_model_metadata_pb2.GetModelMetadataResponse.FromString,
        )


class ModelServiceStub:
    """GetModelStatus of `tensorflow.serving.ModelService`."""

    def __init__(self, channel: Any) -> None:
        self.GetModelStatus = channel.unary_unary(
            f"/{MODEL_SERVICE}/GetModelStatus",
            request_serializer=get_model_status_pb2.GetModelStatusRequest.SerializeToString,
            response_deserializer=get_model_status_pb2.GetModelStatusResponse.FromString,
        )
