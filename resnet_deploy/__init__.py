"""resnet-deploy: a PyTorch ResNet from Fashion-MNIST training to a verified TensorRT engine."""

__version__ = "0.1.0"
