"""The weight binder every GGUF decoder family uses: its weight tables in, the backend's arrays and linears out.

A family names its tensors in two tables (our name -> GGUF name; see `WEIGHTS` / `LAYER_WEIGHTS` in llama.py),
and `bind_weights` is the one place that reads them, so a name is looked up, and a mismatch is caught, the same
way for every family. Both directions fail loudly before a model is built: a tensor a table names that the file
lacks, and a tensor in the file that no table names (a file of another layout whose extra weights would silently
go unused otherwise).
"""

from __future__ import annotations

from votive.errors import ModelConfigError

# Tensors a file may hold that no weight table claims because another reader does: rope_freqs.weight, the RoPE
# frequency factors llama.cpp's converter writes for Llama 3.1-style scaling, which votive.models.rope_scaling
# reads into the RoPE table (and refuses for architectures llama.cpp does not give them to).
UNCLAIMED_OK = frozenset({"rope_freqs.weight"})


def bind_weights(f, ops, table: dict, n_layers: int, layer_table: dict, optional=()):
    """Look every name of `table` and, for layers 0..n_layers-1, of `layer_table` (GGUF names with `{i}` for the
    layer) up in GGUF file `f`. 1-D tensors (norm weights) become float32 arrays, matrices the backend's linears
    (`ops.make_linear`, which keeps quantized blocks as they are), both on `ops`'s device.

    Args:
        f: an open `votive.formats.gguf.GGUFFile`.
        ops: the backend (a `votive.backends.ops.OpSet`), which makes the arrays and linears.
        table, layer_table: our name -> GGUF tensor name, for the whole model and per layer.
        optional: our names the file may lack (bound to None), e.g. LLaMA's "output", absent when tied.

    Returns:
        (top, layers): {our name: array or linear} for `table`, and one such dict per layer.

    Raises:
        ModelConfigError: a tensor a table names is missing from the file, or the file holds tensors no table
            names (other than UNCLAIMED_OK); the message gives the file, and the tensor or the count and one example.
    """
    used = set()

    def one(ours, theirs):
        if theirs not in f.tensors:
            if ours in optional:
                return None
            raise ModelConfigError(f"{f.path}: missing tensor {theirs!r}")
        used.add(theirs)
        if len(f.tensors[theirs].shape) == 1:
            return ops.asarray(f[theirs], ops.float32)
        return ops.make_linear(f, theirs)

    top = {ours: one(ours, theirs) for ours, theirs in table.items()}
    layers = [{ours: one(ours, t.format(i=i)) for ours, t in layer_table.items()} for i in range(n_layers)]
    unknown = sorted(set(f.tensors) - used - UNCLAIMED_OK)
    if unknown:
        raise ModelConfigError(f"{f.path}: {len(unknown)} tensors this architecture does not use, e.g. {unknown[0]!r}")
    return top, layers


def encoder_arrays(ops, arrays: dict, release=None) -> dict:
    """An encoder layer's host arrays (our name -> float array) as the backend's: each matrix (2-D) as its packed
    float linear where the backend has one (numpy: `encoder_dense_linear`, the same products as `ops.linear` of the
    matrix, packed once here), the rest as arrays. release: called once they are packed, with no argument (the
    checkpoint's pages of them may then leave memory)."""
    dense = getattr(ops, "encoder_dense_linear", None)
    out = {name: dense(a, name) if dense is not None and getattr(a, "ndim", 0) == 2 else ops.asarray(a)
           for name, a in arrays.items()}
    if dense is not None and release is not None:
        release()
    return out
