"""Builders for deployable artifacts: Lambda layers, function zips, container and GPU images, Modal apps.

The builders (run on the build machine, by `votive build`):
    lambda_build    `build_lambda`: runtime layer, model layer or S3-staged files, function zip, manifest
    image_build     `build_image`: a Docker build context (awslambdaric entry point; CUDA base with --gpu)
    modal_build     `build_modal`: a Modal app module with memory snapshots
    runtime_tree    votive + its dependencies for a target: pip for the target platform, kernels, slimming,
                    bytecode (dependencies, kernel_target, slim, bytecode do each step)
    archive         reproducible zips, safe member names; output: atomic output folders; limits: Lambda's
                    quotas and what to do over them; targets: runtimes, architectures, limits as tables
    local_tree      a Lambda-like folder tree to run a build by itself under the real awslambdaric
    tools           the programs a build runs (pip, cc, strip, objdump, qemu), passed in
    report          the summary `votive build` prints

What runs where the model is served (shipped inside the artifacts, light to import):
    entry           the function's entry point: finds the model (bundled, or fetched from S3), hands over
    s3_weights      parallel ranged GETs of S3-staged weights into /tmp, size and sha256 checked, reused
    asgi            a Lambda handler as an ASGI app (the Modal web endpoint)
    warm            warms cupy's kernel cache while a GPU image is built
"""
