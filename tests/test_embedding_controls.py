"""Output controls of /v1/embeddings and SentenceEncoder: instruction prompts (input_type, prompt_name),
Matryoshka `dimensions`, and the int8 / uint8 / binary / ubinary encodings, against sentence-transformers.

The random-weight folders are rebuilt from tests/data/embedding_controls/folders.py; reference.npz holds
sentence-transformers' answers for them and for all-MiniLM-L6-v2 (README.md there says how and with which versions
it was made). No torch or sentence-transformers is imported here.

Tolerances: floats within 2e-5 of sentence-transformers (float32, different summation order). Quantization is
compared bit for bit on sentence-transformers' own floats; from votive's floats a code may sit one bucket over
where a value lies within float32 noise of a bucket edge (a sign bit likewise near 0), so those comparisons allow a
difference of 1 in a small share of codes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend
from votive.errors import InputError, ModelConfigError, VotiveFault
from votive.handlers.embeddings import Settings, make_handler
from votive.models.embedding_controls import Prompts, quantize, truncate
from votive.models.sentence_encoder import SentenceEncoder

DATA = Path(__file__).parent / "data" / "embedding_controls"
REF = np.load(DATA / "reference.npz")
FLOAT_TOL = 2e-5


def _folders():
    spec = importlib.util.spec_from_file_location("embedding_controls_folders", DATA / "folders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


folders = _folders()
TEXTS = folders.TEXTS


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("controls")
    return {name: folders.write_folder(name, root / name) for name in folders.FOLDERS}


@pytest.fixture(scope="module")
def prompted(paths):
    return SentenceEncoder.from_folder(paths["prompted"], get_backend("numpy"), model_id="prompted")


@pytest.fixture(scope="module")
def plain(paths):
    return SentenceEncoder.from_folder(paths["plain"], get_backend("numpy"), model_id="plain")


def post(handler, body: dict) -> tuple[int, dict]:
    event = {"version": "2.0", "rawPath": "/v1/embeddings", "rawQueryString": "", "isBase64Encoded": False,
             "headers": {"content-type": "application/json"}, "body": json.dumps(body),
             "requestContext": {"http": {"method": "POST", "path": "/v1/embeddings"}}}
    response = handler(event, None)
    return response["statusCode"], json.loads(response["body"])


def vectors(body: dict, dtype=np.float32) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]], dtype)


def near_codes(got, expected, share: float = 0.01):
    """Quantized codes from votive's floats against sentence-transformers' from theirs (module docstring)."""
    got, expected = np.asarray(got, np.int64), np.asarray(expected, np.int64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1
    assert (got != expected).mean() <= share


def near_bits(got, expected, share: float = 0.01):
    got_bits = np.unpackbits(np.asarray(got).astype(np.uint8), axis=-1)
    expected_bits = np.unpackbits(np.asarray(expected).astype(np.uint8), axis=-1)
    assert got_bits.shape == expected_bits.shape and (got_bits != expected_bits).mean() <= share


# ------------------------------------------------------------------------------------------- prompts
def test_prompts_are_read_and_the_default_prompt_applies(prompted):
    assert prompted.prompts == Prompts(folders.PROMPTS, "query")
    assert prompted.matryoshka_dims == (16, 32) and prompted.normalized
    got, n_tokens = prompted.encode(TEXTS)
    assert np.abs(got - REF["prompted/default"]).max() <= FLOAT_TOL
    assert n_tokens == REF["prompted/tokens/default"].sum()  # the prefix's tokens counted, truncation to 64 too


@pytest.mark.parametrize("options, key", [
    ({"prompt_name": "passage"}, "passage"),
    ({"prompt": "passage: "}, "passage"),
    ({"prompt": ""}, "empty_prompt"),  # an explicit empty prompt turns the default off, as in sentence-transformers
    ({"prompt": "", "prompt_name": "passage"}, "empty_prompt"),  # prompt wins over prompt_name
])
def test_prompt_and_prompt_name_match_sentence_transformers(prompted, options, key):
    assert np.abs(prompted.embed(TEXTS, **options) - REF[f"prompted/{key}"]).max() <= FLOAT_TOL
    for text, expected in zip(TEXTS, REF[f"prompted/tokens/{key}"]):
        assert prompted.encode([text], **options)[1] == expected


def test_unknown_prompt_name_is_an_input_error(prompted):
    with pytest.raises(InputError, match="prompt_name 'search' is not one of this model's prompts "
                                         "\\('query', 'passage', 'classification'\\)"):
        prompted.embed(["x"], prompt_name="search")


def test_input_type_aliases():
    both = Prompts({"query": "q: ", "passage": "p: "})
    assert [both.for_input_type(t) for t in ("query", "search_query", "passage", "document", "search_document",
                                             "corpus")] == ["q: ", "q: ", "p: ", "p: ", "p: ", "p: "]
    nomic = Prompts({"search_query": "search_query: ", "search_document": "search_document: "})
    assert (nomic.for_input_type("query"), nomic.for_input_type("document")) == ("search_query: ",
                                                                                 "search_document: ")
    assert Prompts({"document": "d: ", "passage": "p: "}).for_input_type("passage") == "p: "  # a name beats an alias
    assert Prompts().for_input_type("query") == Prompts().for_input_type("document") == ""  # none configured
    with pytest.raises(InputError) as info:
        both.for_input_type("Query")
    assert str(info.value) == ("input_type 'Query' is not one of 'query', 'passage', 'search_query', 'document', "
                               "'corpus', 'search_document'")


@pytest.mark.parametrize("contents, words", [
    ({"prompts": {"query": "q: "}, "default_prompt_name": "passage"}, "default_prompt_name 'passage' is not one"),
    ({"prompts": {"query": 3}}, "'prompts' must map prompt names to strings"),
    (["query"], "expected a JSON object, found list"),
])
def test_malformed_prompt_config_is_refused(tmp_path, contents, words):
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(contents))
    with pytest.raises(ModelConfigError, match=words):
        Prompts.from_folder(tmp_path)


def test_pooling_that_leaves_prompts_out_is_refused_only_with_a_prompt(tmp_path):
    folder = folders.write_folder("prompted", tmp_path / "m")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "include_prompt": False}))
    enc = SentenceEncoder.from_folder(folder, get_backend("numpy"), model_id="m")
    with pytest.raises(InputError, match="include_prompt: false"):
        enc.embed(["x"])  # the default prompt
    assert np.abs(enc.embed(TEXTS, prompt="") - REF["prompted/empty_prompt"]).max() <= FLOAT_TOL


# ---------------------------------------------------------------------------------------- Matryoshka
def test_truncation_renormalises_a_normalising_model(prompted):
    got = prompted.embed(TEXTS, truncate_dim=16)
    assert got.shape == (6, 16) and np.abs(got - REF["prompted/trunc16"]).max() <= FLOAT_TOL
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_truncation_keeps_the_numbers_of_a_model_without_normalize(plain):
    assert not plain.normalized and plain.matryoshka_dims is None and plain.prompts == Prompts()
    got = plain.embed(TEXTS, truncate_dim=16)
    assert np.abs(got - REF["plain/trunc16"]).max() <= FLOAT_TOL
    assert np.array_equal(got, plain.embed(TEXTS)[:, :16])


@pytest.mark.parametrize("dim", [0, 65, 2.5, True])
def test_truncate_dim_out_of_range_is_an_input_error(dim):
    with pytest.raises(InputError, match="expected an integer from 1 to the model's dimension 64"):
        truncate(np.ones((2, 64), np.float32), dim, renormalize=True)


@pytest.mark.parametrize("config, expected", [
    ({"matryoshka_dimensions": [64, 16, 16, 32]}, (16, 32, 64)),
    ({"is_matryoshka": True}, tuple(range(1, 65))),
    ({}, None),
])
def test_matryoshka_declarations(tmp_path, config, expected):
    from votive.models.embedding_controls import matryoshka_dims

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert matryoshka_dims(tmp_path, 64) == expected


@pytest.mark.parametrize("dims", [[0, 16], [128], "16", [], [16.0]])
def test_malformed_matryoshka_declaration_is_refused(tmp_path, dims):
    from votive.models.embedding_controls import matryoshka_dims

    (tmp_path / "config.json").write_text(json.dumps({"matryoshka_dimensions": dims}))
    with pytest.raises(ModelConfigError, match="matryoshka_dimensions must be a list of integers from 1 to the "
                                               "embedding dimension 64"):
        matryoshka_dims(tmp_path, 64)


# -------------------------------------------------------------------------------------------- quantize
@pytest.mark.parametrize("precision", ["int8", "uint8"])
@pytest.mark.parametrize("ranges", ["unit", "calibration"])
def test_int8_uint8_bit_exact_with_quantize_embeddings(precision, ranges):
    expected = REF[f"quant/{precision}_{ranges}"]
    got = quantize(REF["prompted/empty_prompt"], precision, REF[f"ranges/{ranges}"])
    assert got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_bit_exact_with_quantize_embeddings(precision):
    expected = REF[f"quant/{precision}"]
    got = quantize(REF["prompted/empty_prompt"], precision)
    assert got.shape == (6, 8) and got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_edge_values_bit_exact(precision):
    """Zeros, values on the range ends and beyond, a constant dimension, 37 dimensions (not whole bytes)."""
    ranges = REF["edge/ranges"] if "int8" in precision else None
    got = quantize(REF["edge/x"], precision, ranges)
    assert got.dtype == REF[f"edge/{precision}"].dtype and np.array_equal(got, REF[f"edge/{precision}"])
    if "int8" in precision:  # without ranges: from the batch itself, as sentence-transformers
        assert np.array_equal(quantize(REF["edge/x"], precision), REF[f"edge/{precision}_batch"])
        # the same pair for every dimension may be given as (2,)
        assert np.array_equal(quantize(REF["edge/x"], precision, [-1.5, 1.5]),
                              quantize(REF["edge/x"], precision, np.repeat([[-1.5], [1.5]], 37, axis=1)))


def test_quantize_refusals():
    with pytest.raises(InputError, match="one embedding has no range"):
        quantize(np.ones((1, 8), np.float32), "int8")
    with pytest.raises(InputError, match=r"ranges has shape \(2, 3\); expected \(2, 8\)"):
        quantize(np.ones((2, 8), np.float32), "uint8", np.zeros((2, 3)))
    with pytest.raises(InputError, match="precision 'int4' is not one of float32, int8, uint8, binary, ubinary"):
        quantize(np.ones((2, 8), np.float32), "int4")
    with pytest.raises(RuntimeError, match="non-finite"):
        quantize(np.full((2, 8), np.nan, np.float32), "binary")


def test_model_path_quantizes_its_own_floats(prompted):
    got = prompted.embed(TEXTS, prompt="", precision="int8", ranges=REF["ranges/calibration"])
    near_codes(got, REF["quant/int8_calibration"])
    near_bits(prompted.embed(TEXTS, prompt="", precision="ubinary"), REF["quant/ubinary"])
    one = prompted.embed("hello world", prompt="", precision="binary")
    assert one.shape == (8,) and one.dtype == np.int8


# --------------------------------------------------------------------------------------------- handler
@pytest.fixture(scope="module")
def prompted_handler(prompted):
    return make_handler(prompted)


@pytest.fixture(scope="module")
def plain_handler(plain):
    return make_handler(plain)


@pytest.mark.parametrize("input_type, key", [
    (None, "default"), ("query", "default"), ("search_query", "default"), ("passage", "passage"),
    ("document", "passage"), ("search_document", "passage"),
])
def test_input_type_picks_the_prompt(prompted_handler, input_type, key):
    body = {"input": TEXTS} if input_type is None else {"input": TEXTS, "input_type": input_type}
    status, answer = post(prompted_handler, body)
    assert status == 200 and np.abs(vectors(answer) - REF[f"prompted/{key}"]).max() <= FLOAT_TOL
    assert answer["usage"]["prompt_tokens"] == REF[f"prompted/tokens/{key}"].sum()


def test_input_type_names_a_prompt_of_the_model(prompted_handler, prompted):
    status, answer = post(prompted_handler, {"input": TEXTS[:2], "input_type": "classification"})
    assert status == 200
    assert np.array_equal(vectors(answer), prompted.embed(TEXTS[:2], prompt_name="classification"))
    assert np.abs(vectors(answer) - prompted.embed(TEXTS[:2], prompt="")).max() > 1e-3  # a prefix did apply


@pytest.mark.parametrize("input_type, code, words", [
    ("search", "invalid_value", "'input_type' is 'search'; prompted takes one of 'query', 'passage', "
                                "'classification', 'search_query', 'document', 'corpus', 'search_document'"),
    (["query"], "invalid_type", "'input_type' must be a string, found a JSON array"),
])
def test_bad_input_type_is_a_400_naming_the_choices(prompted_handler, input_type, code, words):
    status, answer = post(prompted_handler, {"input": "x", "input_type": input_type})
    assert status == 400 and answer["error"]["param"] == "input_type" and answer["error"]["code"] == code
    assert answer["error"]["message"] == words


def test_declared_dimensions_are_cut_and_renormalised(prompted_handler):
    status, answer = post(prompted_handler, {"input": TEXTS, "dimensions": 16})
    assert status == 200 and np.abs(vectors(answer) - REF["prompted/trunc16"]).max() <= FLOAT_TOL
    status, answer = post(prompted_handler, {"input": TEXTS, "dimensions": 64})  # the model's own: accepted
    assert status == 200 and np.abs(vectors(answer) - REF["prompted/default"]).max() <= FLOAT_TOL


def test_undeclared_dimensions_need_the_request_to_insist(prompted_handler):
    status, answer = post(prompted_handler, {"input": TEXTS, "dimensions": 20})
    assert status == 400 and answer["error"]["param"] == "dimensions"
    assert answer["error"]["message"] == (
        "'dimensions' is 20, but prompted makes 64-dimensional embeddings and was trained to be shortened to 16, "
        "32 only; send one of those, leave 'dimensions' out, or send \"allow_untrained_dimensions\": true to cut "
        "anyway")
    status, answer = post(prompted_handler, {"input": TEXTS, "dimensions": 20, "allow_untrained_dimensions": True})
    expected = REF["prompted/default"][:, :20]
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert status == 200 and np.abs(vectors(answer) - expected).max() <= FLOAT_TOL


@pytest.mark.parametrize("body, param, words", [
    ({"dimensions": 0}, "dimensions", "'dimensions' is 0, but prompted makes 64-dimensional embeddings; send an "
                                      "integer from 1 to 64"),
    ({"dimensions": 65, "allow_untrained_dimensions": True}, "dimensions", "'dimensions' is 65, but prompted"),
    ({"dimensions": 20, "allow_untrained_dimensions": "yes"}, "allow_untrained_dimensions",
     "'allow_untrained_dimensions' must be a boolean, found a JSON string"),
    ({"encoding_format": "binary", "quantization_ranges": [-1, 1]}, "quantization_ranges",
     "'quantization_ranges' applies to encoding_format 'int8' and 'uint8' only, not 'binary'"),
    ({"encoding_format": "int8", "quantization_ranges": [[-1] * 64, [1] * 63]}, "quantization_ranges",
     "'quantization_ranges' must be [lo, hi] (finite numbers) or [[lo, ...], [hi, ...]] with 64 numbers each"),
    ({"encoding_format": "int8", "dimensions": 16, "quantization_ranges": [[-1] * 64, [1] * 64]},
     "quantization_ranges", "with 16 numbers each"),
    ({"encoding_format": "uint8", "quantization_ranges": [-1, "1"]}, "quantization_ranges", "[lo, hi]"),
])
def test_bad_controls_are_400s(prompted_handler, body, param, words):
    status, answer = post(prompted_handler, {"input": "x", **body})
    assert status == 400 and answer["error"]["param"] == param and words in answer["error"]["message"]


def test_nan_ranges_are_refused(prompted_handler):
    event_body = '{"input": "x", "encoding_format": "int8", "quantization_ranges": [NaN, 1]}'
    event = {"version": "2.0", "rawPath": "/v1/embeddings", "rawQueryString": "", "isBase64Encoded": False,
             "headers": {}, "body": event_body, "requestContext": {"http": {"method": "POST"}}}
    response = prompted_handler(event, None)
    assert response["statusCode"] == 400 and "finite numbers" in response["body"]


def test_model_without_declaration_refuses_then_the_setting_allows(plain, plain_handler):
    status, answer = post(plain_handler, {"input": TEXTS, "dimensions": 16})
    assert status == 400 and "declares no Matryoshka dimensions" in answer["error"]["message"]
    for setting in ("any", "16, 48"):
        handler = make_handler(plain, matryoshka_dims=Settings.from_env({"VOTIVE_MODEL": "m",
                                                                         "VOTIVE_MATRYOSHKA_DIMS": setting})
                               .matryoshka_dims)
        status, answer = post(handler, {"input": TEXTS, "dimensions": 16})
        assert status == 200 and np.abs(vectors(answer) - REF["plain/trunc16"]).max() <= FLOAT_TOL  # not unit
    assert post(handler, {"input": "x", "dimensions": 17})[0] == 400
    health = handler({"path": "/health"}, None)
    assert health["matryoshka_dimensions"] == [16, 48] and health["input_types"][:2] == ["query", "search_query"]


def test_matryoshka_setting_checks(plain):
    assert Settings.from_env({"VOTIVE_MODEL": "m"}).matryoshka_dims is None
    with pytest.raises(VotiveFault, match="VOTIVE_MATRYOSHKA_DIMS='16,x' is not 'any' or a list of positive"):
        Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_MATRYOSHKA_DIMS": "16,x"})
    with pytest.raises(VotiveFault, match="VOTIVE_MATRYOSHKA_DIMS names 128, but plain makes 64-dimensional"):
        make_handler(plain, matryoshka_dims=(16, 128))


def test_health_reports_the_controls(prompted_handler):
    health = prompted_handler({"path": "/health"}, None)
    assert health["matryoshka_dimensions"] == [16, 32]
    assert health["encoding_formats"] == ["float", "base64", "int8", "uint8", "binary", "ubinary"]
    assert health["input_types"][:3] == ["query", "passage", "classification"]


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_int8_uint8_default_to_unit_ranges_for_a_normalising_model(prompted_handler, precision):
    status, answer = post(prompted_handler, {"input": TEXTS, "encoding_format": precision})
    assert status == 200
    got = vectors(answer, np.int64)
    lo, hi = (-128, 127) if precision == "int8" else (0, 255)
    assert got.shape == (6, 64) and got.min() >= lo and got.max() <= hi
    near_codes(got, quantize(REF["prompted/default"], precision, REF["ranges/unit"]))  # = quantize_embeddings'
    status, explicit = post(prompted_handler, {"input": TEXTS, "encoding_format": precision,
                                               "quantization_ranges": [-1, 1]})
    assert explicit["data"] == answer["data"]


def test_int8_with_calibration_ranges_after_truncation(prompted_handler):
    # per-dimension ranges a little wider than these vectors (a calibration set's would not hug them either)
    r16 = np.vstack([REF["prompted/trunc16"].min(axis=0) * 1.1, REF["prompted/trunc16"].max(axis=0) * 1.1])
    r16 = r16.astype(np.float32)
    status, answer = post(prompted_handler, {"input": TEXTS, "encoding_format": "uint8", "dimensions": 16,
                                             "quantization_ranges": r16.tolist()})
    assert status == 200
    near_codes(vectors(answer, np.int64), quantize(REF["prompted/trunc16"], "uint8", r16))


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_encodings(prompted_handler, precision):
    status, answer = post(prompted_handler, {"input": TEXTS, "encoding_format": precision, "input_type": "query"})
    got = vectors(answer, np.int64)
    assert status == 200 and got.shape == (6, 8)
    expected = quantize(REF["prompted/default"], precision)
    near_bits(got.astype(np.int8 if precision == "binary" else np.uint8), expected)
    status, answer = post(prompted_handler, {"input": TEXTS, "encoding_format": precision, "dimensions": 16})
    assert status == 200 and vectors(answer, np.int64).shape == (6, 2)


def test_unnormalised_model_needs_ranges_for_int8(plain_handler):
    status, answer = post(plain_handler, {"input": "x", "encoding_format": "int8"})
    assert status == 400 and answer["error"]["code"] == "missing_ranges"
    assert answer["error"]["message"].startswith("encoding_format 'int8' needs 'quantization_ranges' for plain: its "
                                                 "embeddings are not normalised")
    ranges = [[-3.0] * 64, [3.0] * 64]
    status, answer = post(plain_handler, {"input": TEXTS, "encoding_format": "int8", "quantization_ranges": ranges})
    assert status == 200
    near_codes(vectors(answer, np.int64), quantize(REF["plain/full"], "int8", np.array(ranges, np.float32)))


# ------------------------------------------------------------------------------------ the openai client
def cosines(got, expected) -> np.ndarray:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_folder(minilm_dir, get_backend("numpy"), model_id="all-MiniLM-L6-v2")


def test_openai_client_on_minilm(minilm, reference_dir):
    openai = pytest.importorskip("openai")
    from votive.emulators.function_url import FunctionUrlServer

    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"]
    with FunctionUrlServer(make_handler(minilm), port=0) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-checked", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="m", input=sentences, dimensions=128)
        cut = client.embeddings.create(model="m", input=sentences, dimensions=128,
                                       extra_body={"allow_untrained_dimensions": True})
        int8 = client.embeddings.create(model="m", input=sentences, extra_body={"encoding_format": "int8"})
        ubinary = client.embeddings.create(model="m", input=sentences, extra_body={"encoding_format": "ubinary"})
        plain = client.embeddings.create(model="m", input=sentences)
        query = client.embeddings.create(model="m", input=sentences, extra_body={"input_type": "query"})
        with pytest.raises(openai.BadRequestError) as bad_type:
            client.embeddings.create(model="m", input="x", extra_body={"input_type": "question"})
    assert refused.value.status_code == 400 and refused.value.param == "dimensions"
    assert "declares no Matryoshka dimensions" in refused.value.message
    got = np.array([d.embedding for d in cut.data], np.float32)  # the client's base64, decoded
    assert got.shape == (8, 128) and cosines(got, REF["minilm/trunc128"]).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    near_codes([d.embedding for d in int8.data], REF["minilm/int8_unit"])
    near_bits(np.array([d.embedding for d in ubinary.data], np.uint8), REF["minilm/ubinary"])
    # MiniLM has no prompts: "query" adds no prefix (sentence-transformers' encode_query), and counts no tokens
    assert [d.embedding for d in query.data] == [d.embedding for d in plain.data]
    assert query.usage.prompt_tokens == plain.usage.prompt_tokens
    assert bad_type.value.param == "input_type" and "'input_type' is 'question'; all-MiniLM-L6-v2 takes one of " \
        "'query', 'search_query', 'document', 'passage', 'corpus', 'search_document'" in bad_type.value.message


def test_openai_client_on_the_prompted_model(prompted):
    openai = pytest.importorskip("openai")
    from votive.emulators.function_url import FunctionUrlServer

    with FunctionUrlServer(make_handler(prompted), port=0) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-checked", max_retries=0)
        passage = client.embeddings.create(model="m", input=TEXTS, extra_body={"input_type": "passage"})
        cut = client.embeddings.create(model="m", input=TEXTS, dimensions=16, encoding_format="float")
    assert np.abs(np.array([d.embedding for d in passage.data]) - REF["prompted/passage"]).max() <= FLOAT_TOL
    assert passage.usage.prompt_tokens == REF["prompted/tokens/passage"].sum()
    assert np.abs(np.array([d.embedding for d in cut.data]) - REF["prompted/trunc16"]).max() <= FLOAT_TOL


def test_votive_serve_reads_the_matryoshka_setting(paths):
    """`votive serve FOLDER` in its own process, VOTIVE_MATRYOSHKA_DIMS in its environment: the setting replaces
    the folder's own declaration (16, 32), and the openai client gets the prompts and the cut."""
    import os
    import signal
    import subprocess
    import sys

    openai = pytest.importorskip("openai")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), VOTIVE_MATRYOSHKA_DIMS="20")
    command = [sys.executable, "-m", "votive.cli", "serve", str(paths["prompted"]), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready = process.stdout.readline()
        assert "votive: serving votive.handlers.embeddings.handler at http://127.0.0.1:" in ready, \
            process.stderr.read() if process.poll() is not None else ready
        client = openai.OpenAI(base_url=ready.split(" at ", 1)[1].split()[0] + "/v1", api_key="unused",
                               max_retries=0, timeout=60)
        cut = client.embeddings.create(model="m", input=TEXTS, dimensions=20, extra_body={"input_type": "passage"})
        with pytest.raises(openai.BadRequestError, match=r"served shortened to 20 only \(VOTIVE_MATRYOSHKA_DIMS"):
            client.embeddings.create(model="m", input=TEXTS, dimensions=16)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    expected = REF["prompted/passage"][:, :20]
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(np.array([d.embedding for d in cut.data]) - expected).max() <= FLOAT_TOL
    assert cut.usage.prompt_tokens == REF["prompted/tokens/passage"].sum()


class NoControls:
    """An encoder with only the original surface: encode(texts, batch_size), no prompts, no Matryoshka."""

    kind, backend, max_seq_length, dim, model_id = "embedding", "numpy", 16, 4, "bare"

    def encode(self, texts, batch_size=32):
        return np.ones((len(texts), 4), np.float32) / 2, len(texts)


def test_a_model_without_controls_still_serves_and_refuses_them():
    handler = make_handler(NoControls())
    assert post(handler, {"input": ["a", "b"]})[0] == 200
    status, answer = post(handler, {"input": "a", "input_type": "query"})
    assert status == 400 and answer["error"]["message"] == "'input_type' is 'query'; bare takes none"
    status, answer = post(handler, {"input": "a", "encoding_format": "int8"})  # not known to be normalised
    assert status == 400 and answer["error"]["code"] == "missing_ranges"
    assert post(handler, {"input": "a", "dimensions": 2})[0] == 400
    assert handler({"path": "/health"}, None)["input_types"] == []
