"""votive LLM stack: votive.load(path, n_ctx=512, or more for a longer prompt) and the decoder's forward over
one KV cache.

Threads: the driver sets VOTIVE_NUM_THREADS=2, the same count llama.cpp gets; votive sets its BLAS threads
itself from the cores available.
"""

import llm_harness

N_CTX = llm_harness.N_CTX  # llama.cpp's n_ctx in the other worker: the same KV cache size


class VotiveLLM:
    def import_libs(self):
        import votive

        self.votive = votive

    def load(self, model_path, n_ctx=N_CTX, n_batch=None):
        """n_batch: llama.cpp's; votive takes any prompt as one batch."""
        self.model = self.votive.load(model_path, n_ctx=n_ctx)
        self.cache = None

    def tokenize(self, text):
        return self.model.tokenize(text)

    def prefill(self, ids):
        self.cache = self.model.new_cache()
        return self.model.forward(ids, self.cache, 0)

    def step(self, token, pos):
        return self.model.forward([token], self.cache, pos)

    def info(self):
        """What the run used: backend, whether the C kernels loaded, their thread count."""
        from votive.quant import kernels

        return {"backend": self.model.backend, "c_kernels": kernels.available(),
                "threads": kernels.configured_threads()}


if __name__ == "__main__":
    llm_harness.main(VotiveLLM)
