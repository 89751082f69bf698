"""Reference models: small ones of the classic families (MLP, CNN, LSTM, Transformer encoder, in ``small``) and
ImageNet-size CNNs (ResNet-18/34/50, MobileNetV2, EfficientNet-Lite0…4) with the key names of published weights.

Every factory takes the data's per-sample ``input_shape`` and ``n_classes`` plus JSON-plain keyword arguments, is
registered in :data:`ZOO` under its ``zoo:NAME`` and returns raw logits of shape (batch, n_classes).
"""

from __future__ import annotations

from . import efficientnet_lite, mobilenet, resnet, small  # noqa: F401  (each registers its models)
from .checkpoints import LAYOUTS, convert_checkpoint, load_checkpoint, pretrained_lite_file, read_checkpoint
from .efficientnet_lite import LITE_MEAN_255, LITE_PARAMS, LITE_STD_255, EfficientNetLite
from .mobilenet import MobileNetV2
from .registry import ZOO, build_zoo, register_zoo
from .resnet import ResNet
from .small import EncoderBlock, LSTMClassifier, TransformerClassifier, cnn, mlp

__all__ = [
    "LAYOUTS", "LITE_MEAN_255", "LITE_PARAMS", "LITE_STD_255", "ZOO", "EfficientNetLite", "EncoderBlock",
    "LSTMClassifier", "MobileNetV2", "ResNet", "TransformerClassifier", "build_zoo", "cnn", "convert_checkpoint",
    "load_checkpoint", "mlp", "pretrained_lite_file", "read_checkpoint", "register_zoo",
]
