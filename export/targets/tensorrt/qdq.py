"""The int8 Q/DQ ONNX TensorRT builds its engines from (written by the ONNX target beside its
own graph, ``-tensorrt.onnx``): int8 symmetric activations and weights (TensorRT takes only
symmetric scales; it refuses the ONNX Runtime graph's non-zero zero points), biases left in
float (TensorRT-RTX's parser refuses an Int32 DequantizeLinear). TensorRT-RTX parses it and
builds a strongly typed engine; ONNX Runtime runs it correctly but without its fastest
fusions: 12.2 ms, 0.84x fp32 (t1, 224 px, batch 1, one thread, AVX-512 VNNI, ONNX Runtime
1.32; the measurements of ``partialnet.export.targets.onnx.int8``). Full 8-bit weights: the
7-bit range that keeps ONNX Runtime's U8S8 kernels from saturating buys nothing here, whose
consumers do not saturate.
"""

from partialnet.export.targets.base import QdqRecipe

QDQ = QdqRecipe(
    flavour="tensorrt",
    serves="TensorRT",
    symmetric=True,
    int32_biases=False,
    reduce_range=False,
)
