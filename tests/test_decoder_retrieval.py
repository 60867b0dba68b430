"""Decoders as retrieval models: a Qwen3-Embedding-style embedder and a Qwen3-Reranker-style reranker, from Hugging
Face folders and from GGUF files, against numbers votive did not produce.

- Folders: tests/data/decoder_retrieval/folders.py rebuilds the random-weight folders; reference.npz holds
  sentence-transformers' embeddings and the Qwen3-Reranker model card's scores for them (make_reference.py, run
  outside the suite; README.md there says which versions).
- GGUF: `votive convert` writes the same folders as F32 GGUF files (pooling_type LAST, and RANK with
  cls.output for the reranker); llama-cpp-python embeds / scores them here.

Tolerances: embeddings cosine >= 0.9999 (measured >= 0.9999999), rerank scores within 1e-4 (measured 3e-5 against
transformers: votive's float16 KV cache and attention rounding, see tests/test_hf_decoders.py; 4e-6 against
llama.cpp) and the same order.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import votive
from votive.errors import InputError, ModelConfigError
from votive.sources import resolve_source

DATA = Path(__file__).parent / "data" / "decoder_retrieval"
REFERENCE = np.load(DATA / "reference.npz")
COSINE = 0.9999
SCORE_TOL = 1e-4


def _folders_module():
    spec = importlib.util.spec_from_file_location("decoder_retrieval_folders", DATA / "folders.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


F = _folders_module()
PAIRS = [(q, d) for q in F.QUERIES for d in F.DOCUMENTS]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder_retrieval")
    return {"embedder": F.write_embedder(root / "qwen3-embedding"), "reranker": F.write_reranker(root / "reranker")}


@pytest.fixture(scope="module")
def ggufs(folders, tmp_path_factory):
    from votive.builders.gguf_convert import convert_folder

    root = tmp_path_factory.mktemp("decoder_retrieval_gguf")
    return {name: convert_folder(folder, root / f"{name}.gguf", "f32").path for name, folder in folders.items()}


@pytest.fixture(scope="module")
def embedder(folders):
    return votive.load(str(folders["embedder"]))


@pytest.fixture(scope="module")
def reranker(folders):
    return votive.load(str(folders["reranker"]))


# ------------------------------------------------------------------------------------------------ embedder
def test_kinds(folders, ggufs):
    assert resolve_source(str(folders["embedder"])).kind == "embeddings"
    assert resolve_source(str(folders["reranker"])).kind == "rerank"
    assert resolve_source(str(ggufs["embedder"])).kind == "embeddings"
    assert resolve_source(str(ggufs["reranker"])).kind == "rerank"


def test_embedder_tokenizes_as_sentence_transformers(embedder):
    """EOS appended by the post-processor, truncation to max_seq_length keeping it (the long document)."""
    ids = embedder.tokenize(F.DOCUMENTS)
    assert ids == [REFERENCE[f"emb/ids/documents{k}"].tolist() for k in range(len(F.DOCUMENTS))]
    prompt = F.QWEN3_EMBEDDING_PROMPTS["query"]
    assert embedder.tokenize([prompt + q for q in F.QUERIES]) == [
        REFERENCE[f"emb/ids/queries{k}"].tolist() for k in range(len(F.QUERIES))]
    assert embedder.max_seq_length == F.MAX_SEQ_LENGTH and len(ids[-1]) == F.MAX_SEQ_LENGTH


def test_embedder_matches_sentence_transformers(embedder):
    documents = embedder.embed(F.DOCUMENTS, batch_size=2)
    queries = embedder.embed(F.QUERIES, prompt_name="query")
    assert _cosines(documents, REFERENCE["emb/documents"]).min() >= COSINE
    assert _cosines(queries, REFERENCE["emb/queries"]).min() >= COSINE
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)  # Normalize
    assert embedder.dim == 64 and embedder.prompts.prompts == F.QWEN3_EMBEDDING_PROMPTS
    # the prompt changes the vector: a query embedded without it is not the reference
    assert _cosines(embedder.embed(F.QUERIES[:1]), REFERENCE["emb/queries"][:1])[0] < COSINE


def test_checkpoint_without_the_model_prefix(folders, tmp_path):
    """Qwen3-Embedding's safetensors name tensors as the bare Qwen3Model does ("layers.0...", no "model."):
    the same weights stored that way embed the same."""
    import shutil

    from votive.formats.weights import WeightStore

    folder = Path(shutil.copytree(folders["embedder"], tmp_path / "bare"))
    store = WeightStore(folder)
    tensors = {name[len("model."):]: (store.dtype_of(name), np.array(store.raw(name))) for name in store.keys()}
    for path in [*folder.glob("*.safetensors"), folder / "model.safetensors.index.json"]:
        path.unlink()
    F._hf_folders().write_safetensors(folder / "model.safetensors", tensors)
    model = votive.load(str(folder))
    assert _cosines(model.embed(F.DOCUMENTS), REFERENCE["emb/documents"]).min() >= COSINE


def test_hidden_states_end_in_the_logits(embedder):
    """hidden(ids)'s last row through the LM head is forward's logits: the two paths compute one network."""
    decoder = embedder.model.decoder
    ids = embedder.tokenize(F.DOCUMENTS[:1])[0]
    h = decoder.hidden(ids)
    assert h.shape == (len(ids), 64)
    logits = decoder.logits(ids)
    assert np.abs(decoder.output(h[-1:])[0] - logits).max() <= 1e-4 * np.abs(logits).max()


def test_gguf_embedder_matches_llama_cpp_and_sentence_transformers(ggufs):
    llama_cpp = pytest.importorskip("llama_cpp")
    model = votive.load(str(ggufs["embedder"]))
    ours = model.embed(F.DOCUMENTS)
    llm = llama_cpp.Llama(str(ggufs["embedder"]), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                          n_threads=2, verbose=False)
    assert llm.pooling_type() == 3  # LAST, written by the converter from 1_Pooling
    assert [llm.tokenize(d.encode()) for d in F.DOCUMENTS] == model.tokenize(F.DOCUMENTS)
    theirs = np.array(llm.embed(F.DOCUMENTS))  # normalize=False, as votive
    assert _cosines(ours, theirs).min() >= COSINE
    assert np.abs(np.linalg.norm(ours, axis=1) - np.linalg.norm(theirs, axis=1)).max() < 1e-3
    # the same network as the folder: sentence-transformers' vectors up to scale (the long text is cut there only)
    assert _cosines(ours[:-1], REFERENCE["emb/documents"][:-1]).min() >= COSINE


def test_gguf_mean_pooling_matches_llama_cpp(folders, tmp_path):
    """The same decoder with 1_Pooling set to mean: the converter writes MEAN (1); every token's state averaged,
    the appended EOS included, as llama.cpp does."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import shutil

    from votive.builders.gguf_convert import convert_folder

    folder = Path(shutil.copytree(folders["embedder"], tmp_path / "mean"))
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        config | {"pooling_mode_lasttoken": False, "pooling_mode_mean_tokens": True}))
    path = convert_folder(folder, tmp_path / "mean.gguf", "f32").path
    ours = votive.load(str(path)).embed(F.QUERIES)
    llm = llama_cpp.Llama(str(path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2,
                          verbose=False)
    assert llm.pooling_type() == 1
    assert _cosines(ours, np.array(llm.embed(F.QUERIES))).min() >= COSINE


# ------------------------------------------------------------------------------------------------ reranker
def test_reranker_matches_the_model_card(reranker):
    scores, n_tokens = reranker.predict(PAIRS)
    want = REFERENCE["rerank/scores"]
    assert np.abs(scores - want).max() <= SCORE_TOL
    assert np.argsort(-scores, kind="stable").tolist() == np.argsort(-want, kind="stable").tolist()
    lengths = [len(ids) for ids in reranker.tokenize(PAIRS)]
    assert lengths == REFERENCE["rerank/lengths"].tolist() and n_tokens == sum(lengths)
    assert max(lengths) == F.RERANK_MAX_LENGTH  # the long document was cut, as the card's recipe cuts it


def test_rerank_sorts_and_cuts(reranker):
    documents = F.DOCUMENTS
    want = REFERENCE["rerank/scores"][: len(documents)]
    ranked = reranker.rerank(F.QUERIES[0], documents, top_n=3)
    assert [r.index for r in ranked] == np.argsort(-want, kind="stable")[:3].tolist()
    assert all(abs(r.score - want[r.index]) <= SCORE_TOL for r in ranked)
    with pytest.raises(InputError, match="expected a list of documents"):
        reranker.rerank("q", "a document")


def _llama_cpp_rank(path: Path, prompts: list[str]) -> np.ndarray:
    """llama.cpp's RANK pooling output (n_cls_out = 2 floats a sequence) for each prompt, tokenized with special
    tokens parsed as its server does."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(str(path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2,
                          verbose=False)
    assert llm.pooling_type() == 4
    out = []
    for text in prompts:
        ids = llm.tokenize(text.encode(), add_bos=True, special=True)
        llm._batch.reset()
        llm._batch.add_sequence(ids, 0, False)
        llm._ctx.kv_cache_clear()
        llm._ctx.decode(llm._batch)
        row = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
        out.append([row[0], row[1]])
    return np.array(out)


def test_gguf_reranker_matches_llama_cpp_and_the_model_card(ggufs):
    model = votive.load(str(ggufs["reranker"]))
    short = [i for i, n in enumerate(REFERENCE["rerank/lengths"]) if n < F.RERANK_MAX_LENGTH]  # not cut
    pairs = [PAIRS[i] for i in short]
    scores, _ = model.predict(pairs)
    from votive.formats.gguf import GGUFFile

    template = GGUFFile(ggufs["reranker"]).get("tokenizer.chat_template.rerank")
    theirs = _llama_cpp_rank(ggufs["reranker"], [template.replace("{query}", q).replace("{document}", d)
                                                 for q, d in pairs])
    assert np.abs(theirs.sum(axis=1) - 1.0).max() < 1e-5  # llama.cpp's softmax over (yes, no)
    assert np.abs(scores - theirs[:, 0]).max() <= SCORE_TOL
    want = REFERENCE["rerank/scores"][short]
    assert np.abs(scores - want).max() <= SCORE_TOL
    assert np.argsort(-scores, kind="stable").tolist() == np.argsort(-want, kind="stable").tolist()
    with pytest.raises(InputError, match="more than the model's 512"):
        model.predict([("q", F.DOCUMENTS[-1] * 2)])


# ------------------------------------------------------------------------------------------------ refusals
def test_recipe_file_is_checked(folders, tmp_path):
    from votive.models.decoder_reranker import Recipe

    (tmp_path / "votive_reranker.json").write_text(json.dumps({"recipe": "qwen3-reranker", "instructions": "x"}))
    with pytest.raises(ModelConfigError, match="unknown key 'instructions'"):
        Recipe.from_folder(tmp_path)
    (tmp_path / "votive_reranker.json").write_text(json.dumps({"recipe": "bge"}))
    with pytest.raises(ModelConfigError, match="qwen3-reranker"):
        Recipe.from_folder(tmp_path)
    recipe = Recipe.from_folder(folders["reranker"])
    assert recipe.true_token == "yes" and recipe.max_length == F.RERANK_MAX_LENGTH


def test_weighted_mean_pooling_is_refused(folders, tmp_path):
    import shutil

    folder = Path(shutil.copytree(folders["embedder"], tmp_path / "weighted"))
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config |= {"pooling_mode_lasttoken": False, "pooling_mode_weightedmean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="pooling mode 'weightedmean' is not supported"):
        votive.load(str(folder))


# ---------------------------------------------------------------------------------------------------- HTTP
def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_embeddings_and_rerank_over_a_function_url(embedder, reranker):
    from votive.emulators.function_url import FunctionUrlServer
    from votive.handlers.embeddings import make_handler as embeddings_handler
    from votive.handlers.rerank import make_handler as rerank_handler

    with FunctionUrlServer(embeddings_handler(embedder), port=0) as server:
        answer = _post(server.url + "/v1/embeddings", {"model": "x", "input": F.QUERIES, "input_type": "query"})
    got = np.array([d["embedding"] for d in answer["data"]])
    assert _cosines(got, REFERENCE["emb/queries"]).min() >= COSINE

    with FunctionUrlServer(rerank_handler(reranker), port=0) as server:
        answer = _post(server.url + "/v1/rerank", {"query": F.QUERIES[1], "documents": F.DOCUMENTS, "top_n": 2,
                                                   "return_documents": True})
    second = slice(len(F.DOCUMENTS), 2 * len(F.DOCUMENTS))  # the pairs of F.QUERIES[1]
    want = REFERENCE["rerank/scores"][second]
    assert [r["index"] for r in answer["results"]] == np.argsort(-want, kind="stable")[:2].tolist()
    assert all(abs(r["relevance_score"] - want[r["index"]]) <= SCORE_TOL for r in answer["results"])
    assert answer["results"][0]["document"]["text"] == F.DOCUMENTS[answer["results"][0]["index"]]
    assert answer["usage"]["total_tokens"] == int(REFERENCE["rerank/lengths"][second].sum())
