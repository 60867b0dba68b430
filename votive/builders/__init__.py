"""Builders for deployable artifacts (build time only; never shipped): Lambda layers, function zips, container
and GPU images, Modal apps.

    lambda_build    `build_lambda`: runtime layer, model layer or S3-staged files, function zip, manifest
    image_build     `build_image`: a Docker build context (awslambdaric entry point; CUDA base with --gpu)
    modal_build     `build_modal`: a Modal app module with memory snapshots
    runtime_tree    votive's serving packages + dependencies for a target: pip for the target platform, the
                    kernel library (kernel_target), slimming (slim), bytecode (bytecode)
    model_files     which model files a build packs, and which handler serves the model
    archive         reproducible zips, safe member names; output: atomic output folders
    size_limits     Lambda's size quotas checked against a build, and what to do over them
    targets         runtimes, architectures and limits as tables; tools: the programs a build runs, passed in
    stream_wrapper  the wrapper script that runs votive's streaming runtime loop on Lambda's managed runtime
    report          the summary `votive build` prints
"""
