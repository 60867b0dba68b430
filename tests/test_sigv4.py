"""SigV4 for AWS_IAM function URLs, checked by a local server that recomputes each signature with botocore the
way Lambda checks it; and `votive invoke` printing a streamed answer chunk by chunk as it arrives."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from votive.cli import main
from votive.client.sigv4 import region_from_url, sigv4_signer
from votive.client.url_invoke import invoke_url
from votive.errors import EndpointError

KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token"
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


class VerifyingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 with what it checked when the request's SigV4 signature is right, else 403 saying why."""

    credentials = Credentials(KEY, SECRET, TOKEN)
    stream_gate: threading.Event | None = None  # set: answer in chunks, each after the client saw the last

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        problem, scope = self._check(body)
        if problem:
            self._answer(403, {"message": problem})
        elif self.stream_gate is not None:
            self._stream()
        else:
            self._answer(200, {"region": scope[2], "service": scope[3], "body": body.decode()})

    do_GET = do_POST

    def _check(self, body: bytes):
        match = _AUTH.fullmatch(self.headers.get("Authorization", ""))
        if not match:
            return "no SigV4 Authorization header", None
        key, day, region, service, signed, signature = match.groups()
        if key != KEY or self.headers.get("X-Amz-Security-Token") != TOKEN:
            return "unknown access key or missing session token", None
        if self.headers.get("X-Amz-Content-SHA256") != hashlib.sha256(body).hexdigest():
            return "the payload hash does not match the body", None
        # Rebuild the request from what arrived, keeping only the headers the client signed, and let botocore
        # compute the signature for the client's timestamp.
        headers = {name: self.headers[name] for name in signed.split(";")}
        request = AWSRequest(method=self.command, url=f"http://{self.headers['Host']}{self.path}", data=body,
                             headers=headers)
        request.context["timestamp"] = self.headers["X-Amz-Date"]
        signer = SigV4Auth(self.credentials, service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, signature):
            return "signature mismatch", None
        return None, (key, day, region, service)

    def _stream(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in (b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            # the next piece goes only once the client has printed this one: proof it did not wait for the end
            assert self.stream_gate.wait(5)
            self.stream_gate.clear()
        self.wfile.write(b"0\r\n\r\n")

    def _answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), VerifyingHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    VerifyingHandler.stream_gate = None
    httpd.shutdown()
    thread.join()


def signer(url, **kwargs):
    return sigv4_signer(url, region="eu-west-1", credentials=Credentials(KEY, SECRET, TOKEN), **kwargs)


def test_signed_request_verifies(server):
    data = json.dumps({"input": ["héllo"]}).encode()
    result = invoke_url(server, path="/v1/embeddings?x=1", data=data, sign=signer(server))
    assert result.status == 200, result.body
    answer = json.loads(result.body)
    assert (answer["region"], answer["service"], answer["body"]) == ("eu-west-1", "lambda", data.decode())


def test_a_get_without_body_verifies(server):
    assert invoke_url(server, path="/health", sign=signer(server)).status == 200


def test_unsigned_and_wrongly_signed_requests_are_refused(server):
    assert invoke_url(server, data=b"{}").status == 403
    bad = sigv4_signer(server, region="eu-west-1", credentials=Credentials(KEY, "not-the-secret", TOKEN))
    result = invoke_url(server, data=b"{}", sign=bad)
    assert (result.status, json.loads(result.body)["message"]) == (403, "signature mismatch")


def test_a_body_changed_after_signing_is_refused(server):
    sign = signer(server)

    def sign_then_tamper(request):
        sign(request)
        request.data = b'{"input": "other"}'
        request.remove_header("Content-length")

    result = invoke_url(server, data=b'{"input": "mine"}', sign=sign_then_tamper)
    assert result.status == 403


def test_region_comes_from_the_function_url():
    assert region_from_url("https://abcdef123.lambda-url.ap-southeast-2.on.aws/") == "ap-southeast-2"
    assert region_from_url("http://127.0.0.1:9000/") is None
    with pytest.raises(EndpointError, match="cannot tell the AWS region of http://127.0.0.1:9/"):
        sigv4_signer("http://127.0.0.1:9/", credentials=Credentials(KEY, SECRET))


def test_missing_credentials_say_what_to_set(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(EndpointError, match="its auth type is AWS_IAM.*no AWS credentials found"):
        sigv4_signer("https://abc.lambda-url.eu-west-1.on.aws/")


def test_cli_signs_with_the_credentials_chain(server, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    code = main(["invoke", server, "--sign", "always", "--region", "us-east-2", "--data", '{"input": "hi"}',
                 "--state-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert json.loads(out.out)["region"] == "us-east-2"
    assert main(["invoke", server, "--data", "{}", "--state-dir", str(tmp_path)]) == 1  # auto: a local URL, unsigned


def test_cli_signs_a_recorded_aws_iam_deployment_on_its_own(server, monkeypatch, capsys, tmp_path):
    from votive.deploy.state import StateStore

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    StateStore(tmp_path).save({"name": "fn", "provider": "aws", "url": server + "/", "auth": "AWS_IAM"})
    assert main(["invoke", server + "/", "--region", "eu-west-1", "--state-dir", str(tmp_path)]) == 0


def test_streamed_chunks_are_printed_as_they_arrive(server, capsysbinary, monkeypatch, tmp_path):
    gate = VerifyingHandler.stream_gate = threading.Event()
    printed = []
    import sys

    real_write = sys.stdout.buffer.write

    class Out:
        def write(self, data):
            printed.append(data)
            gate.set()  # the server sends the next chunk only after this
            return real_write(data)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", type("S", (), {"buffer": Out(), "flush": lambda self: None})())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    code = main(["invoke", server, "--stream", "--raw", "--sign", "always", "--region", "eu-west-1", "--data", "{}",
                 "--state-dir", str(tmp_path)])
    assert code == 0
    assert b"".join(printed) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    assert len(printed) >= 3
