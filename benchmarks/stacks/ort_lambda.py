"""The ONNX Runtime stack as a Lambda handler, for the cold starts of benchmarks/package_bench.py.

The model loads during init (module import), as votive's does; each invocation embeds `input` with the very code
the embedding benchmark times (ort_worker.OrtStack). ORT_ONNX and ORT_MODEL_DIR name the ONNX file and the folder
holding tokenizer.json, inside the Lambda-like tree.
"""

import os

from ort_worker import OrtStack

_stack = OrtStack(os.environ["ORT_ONNX"])
_stack.import_libs()
_stack.load(os.environ["ORT_MODEL_DIR"])


def handler(event, context):
    texts = event["input"] if isinstance(event["input"], list) else [event["input"]]
    vectors = _stack.embed(texts)
    return {"data": [{"index": i, "embedding": row.tolist()} for i, row in enumerate(vectors)]}
