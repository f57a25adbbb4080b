"""The cloud side of the learned residual: EPA data preparation, a numpy MLP trainer and the ONNX export."""
