"""sentence-transformers stack: SentenceTransformer on torch CPU with 2 threads."""

import harness

THREADS = 2


class StStack:
    def import_libs(self):
        import sentence_transformers
        import torch

        self.torch, self.st = torch, sentence_transformers

    def load(self, model_dir):
        self.torch.set_num_threads(THREADS)
        self.model = self.st.SentenceTransformer(model_dir, device="cpu")

    def embed(self, sentences):
        # One encode call per batch; the model's own Normalize module L2-normalises.
        return self.model.encode(sentences, batch_size=len(sentences), convert_to_numpy=True)


if __name__ == "__main__":
    harness.main(StStack)
