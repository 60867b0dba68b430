"""llama.cpp stack: llama-cpp-python 0.3.36 built from source with GGML_NATIVE (benchmarks/setup_llm_peers.py).

`Llama.eval` runs the prompt as one batch (n_batch = 128 = the prompt) and each decode token alone; the logits
of the last evaluated position are read in place through `llama_get_logits_ith` (with logits_all=False, eval
keeps no copy), and the harness takes their argmax as it does for votive.
"""

import llm_harness

THREADS = 2
N_CTX = llm_harness.N_CTX
N_BATCH = 128  # the whole bench prompt in one llama_decode call (longer prompts: the harness passes their length)


class LlamaCppLLM:
    def import_libs(self):
        import llama_cpp
        import numpy

        self.llama_cpp, self.np = llama_cpp, numpy

    def load(self, model_path, n_ctx=N_CTX, n_batch=N_BATCH):
        # n_ubatch too: llama.cpp splits a batch into micro-batches of n_ubatch (512 by default)
        n_batch = max(n_batch, N_BATCH)
        self.llm = self.llama_cpp.Llama(
            model_path=model_path, n_threads=THREADS, n_threads_batch=THREADS, n_ctx=n_ctx, n_batch=n_batch,
            n_ubatch=n_batch, verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True)

    def _last_logits(self):
        ptr = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return self.np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def prefill(self, ids):
        self.llm.reset()  # n_tokens = 0; eval then drops the old sequence from the KV cache
        self.llm.eval(ids)
        return self._last_logits()

    def step(self, token, pos):
        if self.llm.n_tokens != pos:
            raise SystemExit(f"llama.cpp holds {self.llm.n_tokens} tokens, asked to decode at position {pos}")
        self.llm.eval([token])
        return self._last_logits()

    def info(self):
        """The build's CPU features as llama.cpp reports them (AVX2, AVX512, ... = 1 when compiled in)."""
        return {"system_info": self.llama_cpp.llama_print_system_info().decode().strip(), "threads": THREADS}


if __name__ == "__main__":
    llm_harness.main(LlamaCppLLM)
