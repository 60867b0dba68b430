"""What a Lambda deployment should look like: the options asked for, checked against the build and Lambda's
limits, and the function configuration they make.

Pure functions over plain data: the deployer compares `function_configuration(...)` with what Lambda reports
(`configuration_changes`) to decide whether anything needs updating, and the CloudFormation export writes the
same values into a template. Every check runs before anything is created and raises DeployError in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from votive.builders.stream_wrapper import STREAMING_HANDLERS
from votive.builders.targets import DEFAULT_MEMORY_MB, LAMBDA_LIMITS
from votive.deploy.aws import quotas as limits
from votive.deploy.aws.build_reader import WEIGHTS_ENV, LambdaBuild
from votive.errors import DeployError

# What a deploy may set in the function's environment (--env, votive.toml's env): the knobs the handlers read.
# The build's own variables (which model, where its weights are, the streaming wrapper) are not the user's.
# (tests/test_deploy_project.py checks that every VOTIVE_ name the serving code reads is in one of these lists)
USER_VARIABLES = ("VOTIVE_BACKEND", "VOTIVE_BATCH_SIZE", "VOTIVE_DECODE_STEP", "VOTIVE_MATRYOSHKA_DIMS",
                  "VOTIVE_MAX_DOCUMENTS", "VOTIVE_MAX_INPUTS", "VOTIVE_MAX_N", "VOTIVE_MAX_TOKENS", "VOTIVE_N_CTX", "VOTIVE_NUM_THREADS",
                  "VOTIVE_PREFIX_CACHE_MB", "VOTIVE_SPECIAL_IN_CONTENT", "VOTIVE_SPIN_US", "VOTIVE_WARM_PREFIX")
BUILD_VARIABLES = ("VOTIVE_MODEL", WEIGHTS_ENV, "AWS_LAMBDA_EXEC_WRAPPER")
GPU_VARIABLES = ("VOTIVE_CUDA_KERNELS", "VOTIVE_NVRTC")  # set by GPU images; Lambda has no GPU
DEFAULT_TIMEOUT_S = 60
RUNTIME_MEMORY_MB = 256  # Python, numpy and the tokenizer, beside the mapped weights: below this nothing loads
TMP_HEADROOM_MB = 256  # /tmp beyond the S3 weights themselves (a download's partial file, the runtime's own use)


@dataclass(frozen=True)
class AwsOptions:
    """One `votive deploy aws` request.

    Attributes:
        name: the function name (and the deployment's).
        region: the AWS region.
        architecture: x86_64 or arm64; must match the build's.
        memory_mb: MemorySize; default the build's need or DEFAULT_MEMORY_MB, whichever is more.
        timeout_s: the function's timeout; default the build's suggestion, else DEFAULT_TIMEOUT_S.
        auth: the function URL's auth type, AWS_IAM (callers sign with SigV4) or NONE (public).
        stream: RESPONSE_STREAM invoke mode instead of BUFFERED.
        snapstart: publish a version with SnapStart on and put the URL on its alias.
        provisioned: provisioned concurrency on the alias, or None.
        bucket: the S3 bucket for the artifacts; default votive-ACCOUNT-REGION.
        log_retention_days: how long CloudWatch keeps the function's logs.
        env: variables added to the build's environment (USER_VARIABLES, or any non-votive name).
        tags: tags on the function, beside votive's own.
        subnets, security_groups: the VPC the function runs in (both or neither).
    """

    name: str
    region: str
    architecture: str = "x86_64"
    memory_mb: int | None = None
    timeout_s: int | None = None
    auth: str = "AWS_IAM"
    stream: bool = False
    snapstart: bool = False
    provisioned: int | None = None
    bucket: str | None = None
    log_retention_days: int = limits.LOG_RETENTION_DAYS
    env: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    subnets: tuple = ()
    security_groups: tuple = ()

    @property
    def published(self) -> bool:
        """A version and alias are published (SnapStart and provisioned concurrency both need one)."""
        return self.snapstart or bool(self.provisioned)

    @property
    def invoke_mode(self) -> str:
        return "RESPONSE_STREAM" if self.stream else "BUFFERED"


def check_settings(options: AwsOptions) -> None:
    """What can be known wrong from the options alone, before any build (a build takes minutes)."""
    limits.check_function_name(options.name)
    if options.bucket is not None:
        limits.check_bucket_name(options.bucket)
    if options.auth not in limits.AUTH_TYPES:
        raise DeployError(f"--auth {options.auth!r}: expected one of {', '.join(limits.AUTH_TYPES)}")
    if options.timeout_s is not None:
        limits.check_range("--timeout", options.timeout_s, limits.TIMEOUT_S, "s")
    if options.memory_mb is not None:
        limits.check_range("--memory", options.memory_mb, LAMBDA_LIMITS.memory_mb, "MB")
    if options.log_retention_days not in limits.RETENTION_DAYS:
        raise DeployError(f"log retention {options.log_retention_days} days is not one CloudWatch offers: "
                          f"{', '.join(map(str, limits.RETENTION_DAYS))}")
    if options.provisioned is not None and options.provisioned < 1:
        raise DeployError(f"--provisioned {options.provisioned}: expected at least 1 environment")
    if options.snapstart and options.stream:
        raise DeployError("--snapstart cannot go with --stream: votive's streaming runtime loop does not take part "
                          "in SnapStart's snapshot and restore; choose one")
    if options.snapstart and options.provisioned:
        raise DeployError("--snapstart and --provisioned cannot go together: Lambda does not run SnapStart on a "
                          "version with provisioned concurrency; choose one")
    for name, value in options.env.items():
        check_variable(name, value)
    for key, value in options.tags.items():
        if not (isinstance(key, str) and isinstance(value, str)) or not 1 <= len(key) <= 128 or len(value) > 256 \
                or key.lower().startswith(("aws:", "votive:")):
            raise DeployError(f"tag {key!r}: keys take 1-128 characters, values up to 256, and the prefixes aws: "
                              "and votive: are reserved")
    if bool(options.subnets) != bool(options.security_groups):
        raise DeployError("a VPC needs both subnets and security groups (votive.toml's vpc table: subnets = [...], "
                          "security_groups = [...])")


def check_variable(name: str, value) -> None:
    """DeployError unless `name=value` is a variable a deploy may set."""
    if not isinstance(value, str):
        raise DeployError(f"--env {name}: the value must be a string, found {value!r}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise DeployError(f"--env {name!r}: a variable name takes letters, digits and _, starting with a letter")
    if name in GPU_VARIABLES:
        raise DeployError(f"--env {name}: a GPU image's setting; a Lambda function has no GPU")
    if name in BUILD_VARIABLES or name.startswith("AWS_") or name.startswith("LAMBDA_") or name == "_HANDLER":
        raise DeployError(f"--env {name}: set by the build or by Lambda itself, not by a deploy")
    if name.startswith("VOTIVE_") and name not in USER_VARIABLES:
        raise DeployError(f"--env {name}: not a variable votive reads; these are: {', '.join(USER_VARIABLES)}")


def check_options(options: AwsOptions, build: LambdaBuild) -> None:
    """Everything that can be known wrong before calling AWS; DeployError naming the option or limit."""
    check_settings(options)
    limits.check_range("--timeout", timeout_s(options, build), limits.TIMEOUT_S, "s")
    if options.architecture != build.architecture:
        raise DeployError(f"the build in {build.directory} is for {build.architecture}, but the deploy asks for "
                          f"--arch {options.architecture}: deploy it with --arch {build.architecture} (or leave "
                          f"--arch out), or rebuild it with `votive build lambda {build.model} --arch "
                          f"{options.architecture}`")
    if options.stream and build.serves_with and build.serves_with not in STREAMING_HANDLERS:
        raise DeployError(f"--stream: {build.model} is served by {build.serves_with}, which answers whole (only "
                          "generation streams); deploy without --stream")
    if options.stream and not build.streaming:
        raise DeployError(f"--stream needs a build whose handler streams; the build in {build.directory} answers "
                          f"buffered: rebuild it with `votive build lambda {build.model} --stream`, or deploy "
                          "without --stream")
    if build.streaming and not options.stream:
        raise DeployError(f"the build in {build.directory} streams (votive's runtime loop), which needs a "
                          "RESPONSE_STREAM function URL: pass --stream, or deploy a build made without --stream")
    if options.snapstart and build.streaming:
        raise DeployError("--snapstart cannot go with a streaming build: votive's streaming runtime loop does not "
                          "take part in SnapStart's snapshot and restore; choose one")
    if options.snapstart:
        _check_snapstart(options, build)
    _check_size(build)
    memory = memory_mb(options, build)
    floor = -(-(build.weights_bytes + RUNTIME_MEMORY_MB * 2**20) // 2**20)
    if memory < floor:
        raise DeployError(f"--memory {memory} MB cannot hold {build.model}: its weights take "
                          f"{limits.mib(build.weights_bytes)} and the runtime about {RUNTIME_MEMORY_MB} MB; pass "
                          f"--memory {floor} or more (the build suggests {build.memory_mb or floor})")


def memory_mb(options: AwsOptions, build: LambdaBuild) -> int:
    """The MemorySize to use: as asked, else the build's need or the default, whichever is more."""
    if options.memory_mb is not None:
        return options.memory_mb
    return max(build.memory_mb or 0, DEFAULT_MEMORY_MB)


def timeout_s(options: AwsOptions, build: LambdaBuild) -> int:
    return options.timeout_s or build.timeout_s or DEFAULT_TIMEOUT_S


def ephemeral_mb(build: LambdaBuild) -> int:
    """The /tmp size: Lambda's default, or enough for the S3 weights plus headroom."""
    need = build.ephemeral_mb or 0
    if build.s3_weights:
        need = max(need, -(-build.s3_weights_bytes // 2**20) + TMP_HEADROOM_MB)
    return max(need, LAMBDA_LIMITS.ephemeral_storage_mb[0])


def weights_key_prefix(options: AwsOptions, build: LambdaBuild) -> str:
    """The S3 folder of the build's S3 weights, named after their contents: new weights, new folder."""
    return f"{limits.DeploymentNames(options.name).key_prefix}weights-{build.weights_digest[:16]}/"


def check_environment(environment: dict[str, str]) -> None:
    """DeployError if the variables exceed Lambda's 4 KB for all names and values together."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in environment.items())
    if size > limits.ENVIRONMENT_BYTES:
        raise DeployError(f"the function's environment takes {size} bytes, over Lambda's {limits.ENVIRONMENT_BYTES}")


def function_environment(build: LambdaBuild, weights_uri: str | None, env: dict | None = None) -> dict[str, str]:
    """The function's environment: the build's variables, the deploy's (`env`), and where the S3 weights are."""
    environment = {**build.environment, **(env or {})}
    if build.s3_weights and weights_uri:
        environment[WEIGHTS_ENV] = weights_uri
    return environment


def function_configuration(options: AwsOptions, build: LambdaBuild, *, role_arn: str, layer_arns: list[str],
                           weights_uri: str | None) -> dict:
    """The settings CreateFunction / UpdateFunctionConfiguration take, code and architecture aside."""
    return {
        "Runtime": build.runtime,
        "Handler": build.handler,
        "Role": role_arn,
        "MemorySize": memory_mb(options, build),
        "Timeout": timeout_s(options, build),
        "EphemeralStorage": {"Size": ephemeral_mb(build)},
        "Environment": {"Variables": function_environment(build, weights_uri, options.env)},
        "Layers": list(layer_arns),
        "SnapStart": {"ApplyOn": "PublishedVersions" if options.snapstart else "None"},
        "VpcConfig": {"SubnetIds": list(options.subnets), "SecurityGroupIds": list(options.security_groups)},
    }


def live_configuration(live: dict) -> dict:
    """GetFunctionConfiguration's answer in the form `function_configuration` has (and Update... takes)."""
    return {
        "Runtime": live.get("Runtime"),
        "Handler": live.get("Handler"),
        "Role": live.get("Role"),
        "MemorySize": live.get("MemorySize"),
        "Timeout": live.get("Timeout"),
        "EphemeralStorage": {"Size": (live.get("EphemeralStorage") or {}).get("Size", 512)},
        "Environment": {"Variables": (live.get("Environment") or {}).get("Variables", {})},
        "Layers": [layer["Arn"] for layer in live.get("Layers") or []],
        "SnapStart": {"ApplyOn": (live.get("SnapStart") or {}).get("ApplyOn", "None")},
        "VpcConfig": {"SubnetIds": list((live.get("VpcConfig") or {}).get("SubnetIds") or []),
                      "SecurityGroupIds": list((live.get("VpcConfig") or {}).get("SecurityGroupIds") or [])},
    }


def configuration_changes(desired: dict, live: dict) -> dict:
    """The part of `desired` that differs from `live` (GetFunctionConfiguration's answer), ready to send."""
    current = live_configuration(live)
    return {key: value for key, value in desired.items() if current.get(key) != value}


def _check_snapstart(options: AwsOptions, build: LambdaBuild) -> None:
    if build.runtime not in limits.SNAPSTART_RUNTIMES:
        raise DeployError(f"--snapstart needs one of the runtimes {', '.join(sorted(limits.SNAPSTART_RUNTIMES))}; "
                          f"this build uses {build.runtime}: rebuild for Python 3.12 or later")
    if ephemeral_mb(build) > limits.SNAPSTART_EPHEMERAL_MB:
        raise DeployError(f"--snapstart: SnapStart functions get at most {limits.SNAPSTART_EPHEMERAL_MB} MB of /tmp, "
                          f"but the S3 weights need {ephemeral_mb(build)} MB; bundle smaller (quantized) weights "
                          f"or deploy without --snapstart")


def _check_size(build: LambdaBuild) -> None:
    if len(build.layers) > LAMBDA_LIMITS.layers:
        raise DeployError(f"the build has {len(build.layers)} layers; Lambda takes at most {LAMBDA_LIMITS.layers}")
    total = build.unzipped_total
    if total > LAMBDA_LIMITS.unzipped_total:
        raise DeployError(f"{build.model}: function and layers unzip to {limits.mib(total)}, "
                          f"{limits.mib(total - LAMBDA_LIMITS.unzipped_total)} over Lambda's "
                          f"{limits.mib(LAMBDA_LIMITS.unzipped_total)}; rebuild with the weights in S3, quantize "
                          f"the model, or build a container image")
    tmp_max = LAMBDA_LIMITS.ephemeral_storage_mb[1]
    if build.s3_weights and ephemeral_mb(build) > tmp_max:
        raise DeployError(f"{build.model}: the S3 weights ({limits.mib(build.s3_weights_bytes)}) do not fit in "
                          f"Lambda's largest /tmp ({tmp_max} MB); quantize the model or deploy it to a GPU "
                          f"platform (votive deploy modal)")
