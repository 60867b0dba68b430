"""The `votive` command line.

Each subcommand is one row of SUBCOMMANDS: a name, a one-line help, and a function that adds its arguments
and points `run` at the function doing the work. Work functions return an exit code. Library errors
(VotiveError) become one line `votive: error: ...` on stderr and exit code 2; Ctrl-C exits 130 without a
traceback. Imports happen inside the work functions so that `votive --help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys

import votive

# argument builders only: boto3, modal, the builders and the emulators load when a command runs
from votive.cli import build, completion, convert, corpus_map, deployments, export, invoke, project, serve
from votive.cli.arguments import one_line
from votive.errors import VotiveError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to sys.exit)."""
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks argcomplete for completions (register-python-argcomplete)
        completion.autocomplete(parser)
    args = parser.parse_args(project.route(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args.run(args)
    except VotiveError as exc:
        print(f"votive: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`votive invoke ... | head`): not an error of ours. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again, and exit as a process killed by SIGPIPE would.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout with no file behind it (tests' capture)
            pass
        return EXIT_BROKEN_PIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="votive", description="Serverless inference endpoints that start cold in a fraction of a second."
    )
    parser.add_argument("--version", action="version", version=f"votive {votive.__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, help_text, add_arguments in SUBCOMMANDS:
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return parser


# --- the table -----------------------------------------------------------------------------------------------

SUBCOMMANDS = (
    ("serve", "serve a model behind a local Lambda function URL", serve.add_serve),
    ("invoke", "send a request to a function URL and print the answer", invoke.add_invoke),
    ("map", "embed, rerank or generate over a whole corpus by fanning batches out to a function",
     corpus_map.add_map),
    ("demo", "serve an embedding model locally and answer one real request through its function URL", serve.add_demo),
    ("build", "build deployable artifacts: Lambda layers and function zip, a container image, a Modal app",
     build.add_build),
    ("convert", "write a Hugging Face decoder folder as a GGUF file (q8_0, f16, f32) that llama.cpp loads",
     convert.add_convert),
    ("deploy", "deploy a model to AWS Lambda (function URL) or Modal (GPU web endpoint)", deployments.add_deploy),
    ("destroy", "remove everything a deployment created", deployments.add_destroy),
    ("status", "show a deployment's state, URL and settings", deployments.add_status),
    ("logs", "print a deployed function's CloudWatch logs (--follow for new ones)", deployments.add_logs),
    ("export", "write a deployment as infrastructure as code (a CloudFormation or SAM template)",
     export.add_export),
    ("init", "write a commented votive.toml: the project's deployments, one table per stage", project.add_init),
    ("plan", "print what deploying a votive.toml stage would change, resource by resource; change nothing",
     project.add_plan),
    ("list", "list the deployments recorded in this folder, and votive.toml's stages, with their state",
     project.add_list),
    ("completion", "print a shell completion script: eval \"$(votive completion bash)\" (or zsh)",
     completion.add_completion),
)


if __name__ == "__main__":
    sys.exit(main())
