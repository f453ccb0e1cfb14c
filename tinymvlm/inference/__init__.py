"""Inference: running a model on images and captions (device, precision and threads in `runtime`,
batched embedding, JPEGs decoded on the GPU, the ONNX text path, caption scores).
Imports models, data and the shared modules."""
