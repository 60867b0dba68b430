"""boto3 clients for one account and region, and AWS's errors turned into votive's one-line ones.

boto3 is imported here only, when a client is first asked for: `votive --help` and the handlers never load it.
Credentials come from botocore's usual chain (environment, profile, SSO, instance role); `endpoint_url` (or
boto3's own AWS_ENDPOINT_URL) points every client at a stand-in such as a moto server.

Example:
    >>> clients = AwsClients("eu-west-1")        # doctest: +SKIP
    >>> clients.account()                         # doctest: +SKIP
    '123456789012'
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from votive.errors import DeployError

SERVICES = ("lambda", "iam", "s3", "logs", "sts")
NOT_FOUND = frozenset({"ResourceNotFoundException", "NoSuchEntity", "NoSuchBucket", "NoSuchKey", "404",
                       "NotFound"})
CREDENTIALS_HELP = ("no AWS credentials found: set AWS_PROFILE (after `aws configure` or `aws sso login`), or "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


class AwsClients:
    """One boto3 client per service, all for `region`, each made when first used.

    Args:
        region: the region every regional client talks to.
        endpoint_url: send every call there instead of AWS (tests: a moto server).
        profile: an AWS profile name (default: botocore's chain decides).
        session: a ready boto3 Session (overrides `profile`).
    """

    def __init__(self, region: str, *, endpoint_url: str | None = None, profile: str | None = None, session=None):
        self.region = region
        self.endpoint_url = endpoint_url
        self._profile = profile
        self._session = session
        self._clients: dict[str, object] = {}
        self._account: str | None = None

    @property
    def session(self):
        if self._session is None:
            import boto3
            from botocore.exceptions import ProfileNotFound

            try:
                self._session = boto3.Session(profile_name=self._profile)
            except ProfileNotFound:
                raise DeployError(missing_profile(self._profile)) from None
        return self._session

    def client(self, service: str):
        if service not in self._clients:
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=120)
            self._clients[service] = self.session.client(
                service, region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        return self._clients[service]

    @property
    def lambda_(self):
        return self.client("lambda")

    @property
    def iam(self):
        return self.client("iam")

    @property
    def s3(self):
        return self.client("s3")

    @property
    def logs(self):
        return self.client("logs")

    def account(self) -> str:
        """The account the credentials belong to (STS GetCallerIdentity); DeployError when there are none."""
        if self._account is None:
            with aws_errors("check the AWS credentials"):
                self._account = self.client("sts").get_caller_identity()["Account"]
        return self._account

    def lambda_regions(self) -> list[str]:
        """The regions botocore knows Lambda in, across the commercial, China and GovCloud partitions."""
        regions = []
        for name in ("aws", "aws-cn", "aws-us-gov"):
            regions += self.session.get_available_regions("lambda", partition_name=name)
        return regions


def missing_profile(profile: str | None) -> str:
    """The one line for an AWS profile that is not configured (--profile or AWS_PROFILE)."""
    import os

    import botocore.session

    name, where = (profile, "--profile") if profile else (os.environ.get("AWS_PROFILE", ""), "AWS_PROFILE")
    try:
        known = sorted(botocore.session.Session(profile="default").available_profiles)
    except Exception:
        known = []
    return (f"AWS profile {name!r} ({where}) is not in your AWS config or credentials files; "
            f"configured: {', '.join(known) or 'none'} (add it with `aws configure --profile {name}`)")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND


@contextmanager
def aws_errors(doing: str) -> Iterator[None]:
    """Turn botocore's exceptions raised inside into DeployError("<doing>: <what AWS said>")."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise DeployError(f"{doing}: {CREDENTIALS_HELP}") from None
    except ClientError as exc:
        raise DeployError(f"{doing}: {describe(exc)}") from None
    except BotoCoreError as exc:
        raise DeployError(f"{doing}: {exc}") from None


def describe(exc: BaseException) -> str:
    """A one-line account of an error: 'CreateFunction: AccessDeniedException: User ... is not authorized ...'."""
    from votive.errors import VotiveError

    if isinstance(exc, VotiveError):
        return str(exc)
    code = error_code(exc)
    if not code:
        if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return CREDENTIALS_HELP
        return f"{type(exc).__name__}: {exc}"
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "") or str(exc)
    operation = getattr(exc, "operation_name", "")
    return f"{operation + ': ' if operation else ''}{code}: {message}"
