"""ONNX Runtime stack: fp32 ONNX export of BertModel + tokenizers + numpy pooling, 2 intra-op threads.

Pre- and post-processing mirror sentence-transformers for all-MiniLM-L6-v2: truncate to its max_seq_length
(256), pad to the longest sentence in the batch, mean-pool the last hidden state over the attention mask,
L2-normalise. The model's tokenizer.json carries a fixed 128-token padding and truncation for other uses;
both are replaced here, as sentence-transformers does, or short batches would be padded to 128.
"""

from pathlib import Path

import harness

THREADS = 2
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json
DEFAULT_ONNX = Path(__file__).resolve().parents[1] / ".work" / "minilm.onnx"


class OrtStack:
    def __init__(self, onnx_path=DEFAULT_ONNX):
        self.onnx_path = str(onnx_path)

    def import_libs(self):
        import numpy
        import onnxruntime
        import tokenizers

        self.np, self.ort, self.tokenizers = numpy, onnxruntime, tokenizers

    def load(self, model_dir):
        tok = self.tokenizers.Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # no length: pad to the batch's longest
        self.tokenizer = tok
        opts = self.ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        self.session = self.ort.InferenceSession(self.onnx_path, opts, providers=["CPUExecutionProvider"])

    def embed(self, sentences):
        np = self.np
        encodings = self.tokenizer.encode_batch(sentences)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (n, t)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # (n, t)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)  # (n, t)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = self.session.run(["last_hidden_state"], feeds)[0]  # (n, t, 384)
        weights = mask[:, :, None].astype(np.float32)  # (n, t, 1)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)  # (n, 384)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def weights_bytes(self):
        """Size of the ONNX file: the weights and the graph, as shipped (fp32 export or its int8 quantization)."""
        from pathlib import Path

        return Path(self.onnx_path).stat().st_size


if __name__ == "__main__":
    harness.main(OrtStack)
