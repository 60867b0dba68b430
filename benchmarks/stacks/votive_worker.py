"""votive stack: votive.load + Model.embed; thread count is votive's own choice (available cores).

EXTRA (optional): a `quantize=` type for votive.load, e.g. q8_0 (the encoder's six matrices per layer quantized at
load and multiplied by votive's C kernels); or `stored FOLDER`: load FOLDER instead of the model given (a model
converted by `votive convert --type int8`, whose embeddings equal quantize="int8"'s, or `--type panels`, whose
equal the float model's).
"""

import harness


class VotiveStack:
    def __init__(self, quantize=None, folder=None):
        self.quantize, self.folder = (None, folder) if quantize == "stored" else (quantize, None)

    def import_libs(self):
        import votive

        self.votive = votive

    def load(self, model_dir):
        if self.folder:
            self.model = self.votive.load(self.folder)
        elif self.quantize:
            self.model = self.votive.load(model_dir, quantize=self.quantize)
        else:
            self.model = self.votive.load(model_dir)

    def embed(self, sentences):
        return self.model.embed(sentences)

    def weights_bytes(self):
        """Bytes of the encoder's weights as held (quants, scales and offsets or sums, or GGML blocks for quantized
        matrices, float32 panels or arrays otherwise); the fused q|k|v copy made at load for float models is left out (it repeats
        three stored matrices)."""
        model = getattr(self.model, "model", self.model)
        seen, total = set(), 0
        for w in [model.w, *(layer.w for layer in model.layers)]:
            for value in w.values():
                names = ("packed" if hasattr(value, "packed") else "quants", "scales", "offsets", "sums", "blocks",
                         "weight", "panels")  # int8's quants are held packed only
                parts = [getattr(value, name, None) for name in names]
                for arr in [a for a in parts if a is not None] or [value]:
                    if id(arr) not in seen:
                        seen.add(id(arr))
                        total += arr.nbytes
        return total


if __name__ == "__main__":
    harness.main(VotiveStack)
