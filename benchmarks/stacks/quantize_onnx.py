"""ONNX Runtime's dynamic int8 MiniLM for the quantized comparison; runs in venv-ort with onnx on the path.

    python quantize_onnx.py IN.onnx OUT.onnx

`onnxruntime.quantization.quantize_dynamic` with its defaults: QInt8 weights, one scale per tensor
(per_channel=False), activations quantized per call (MatMulInteger / DynamicQuantizeLinear). venv-ort carries no
`onnx`; embedding_ab.py puts venv-st's onnx and ml_dtypes (links only) on PYTHONPATH for this one step, so the
ORT worker's own environment stays as deployed.
"""

import sys

from onnxruntime.quantization import QuantType, quantize_dynamic


def main(src, dst):
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


if __name__ == "__main__":
    main(*sys.argv[1:])
