"""SigV4 signing for function URLs with auth type AWS_IAM, with botocore's own signer and credentials chain.

A function URL (`https://<id>.lambda-url.<region>.on.aws/`) with AuthType AWS_IAM accepts a request only if it is
signed for service `lambda` in the URL's region by a principal allowed lambda:InvokeFunctionUrl. `sigv4_signer`
returns the `sign` callable `votive.client.url_invoke.invoke_url` takes; botocore is imported only when it is made.

Example:
    >>> region_from_url("https://abc123.lambda-url.eu-west-1.on.aws/v1/embeddings")
    'eu-west-1'
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request

from votive.client.aws_session import CREDENTIALS_HELP
from votive.client.url_invoke import Signer
from votive.errors import EndpointError

SERVICE = "lambda"
_FUNCTION_URL_HOST = re.compile(r"[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws")
SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256")


def region_from_url(url: str) -> str | None:
    """The region in a function URL's host name, or None for any other host."""
    host = urllib.parse.urlsplit(url).hostname or ""
    match = _FUNCTION_URL_HOST.fullmatch(host)
    return match.group(1) if match else None


def is_function_url(url: str) -> bool:
    return region_from_url(url) is not None


def sigv4_signer(url: str, *, region: str | None = None, credentials=None, profile: str | None = None) -> Signer:
    """A `sign(request)` that adds SigV4 headers for `url`'s function URL to a urllib Request.

    Args:
        url: the function URL (its host gives the region).
        region: the region, for a URL whose host does not name one (a local stand-in).
        credentials: botocore Credentials; default botocore's chain (environment, profile, SSO, role).
        profile: an AWS profile for the chain.

    Raises:
        EndpointError: no region can be told, or no credentials are found.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    region = region or region_from_url(url)
    if not region:
        raise EndpointError(f"cannot tell the AWS region of {url}: it is not a function URL "
                            f"(https://ID.lambda-url.REGION.on.aws/); pass --region")
    if credentials is None:
        import botocore.session

        from botocore.exceptions import ProfileNotFound

        from votive.client.aws_session import missing_profile

        try:
            credentials = botocore.session.Session(profile=profile).get_credentials()
        except ProfileNotFound:
            raise EndpointError(missing_profile(profile)) from None
    if credentials is None:
        raise EndpointError(f"cannot sign the request to {url} (its auth type is AWS_IAM): {CREDENTIALS_HELP}")
    signer = SigV4Auth(credentials, SERVICE, region)

    def sign(request: urllib.request.Request) -> None:
        body = request.data or b""
        # The payload's hash goes in a signed header too, so the signature covers the body.
        request.add_header("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest())
        aws_request = AWSRequest(method=request.get_method(), url=request.full_url, data=body,
                                 headers=dict(request.header_items()))
        signer.add_auth(aws_request)
        for name in SIGNATURE_HEADERS:
            if name in aws_request.headers:
                request.add_header(name, aws_request.headers[name])

    return sign
