"""`votive completion bash|zsh`: a shell completion script for every command, option and choice, written from the
parser itself, so it never goes stale and needs nothing installed.

    eval "$(votive completion bash)"      # in ~/.bashrc
    eval "$(votive completion zsh)"       # in ~/.zshrc (through zsh's bashcompinit)

Where argcomplete is installed, `eval "$(register-python-argcomplete votive)"` works as well: `main` hands the
parser to argcomplete when the shell asks (_ARGCOMPLETE set), and argcomplete is imported only then.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_completion(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to write the script for")
    parser.set_defaults(run=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    from votive.cli import build_parser

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def completion_script(parser: argparse.ArgumentParser, shell: str, prog: str = "votive") -> str:
    """The script completing `prog`'s commands (each level's subcommands and options) and options' choices."""
    levels: dict[str, tuple[list[str], list[str]]] = {}  # command path -> (subcommands, options)
    choices: dict[tuple[str, str], list[str]] = {}  # (command path, option) -> its choices
    _walk(parser, "", levels, choices)
    words = "\n".join(f"    {shlex.quote(path)}) echo {shlex.quote(' '.join(subs + opts))} ;;"
                      for path, (subs, opts) in levels.items())
    subcommands = "\n".join(f"    {shlex.quote(path)}) echo {shlex.quote(' '.join(subs))} ;;"
                            for path, (subs, _) in levels.items() if subs)
    option_choices = "\n".join(f"    {shlex.quote(path + '|' + option)}) echo {shlex.quote(' '.join(values))} ;;"
                               for (path, option), values in choices.items())
    fn = f"_{prog.replace('-', '_')}"
    script = f"""# {prog} {shell} completion: eval "$({prog} completion {shell})"
{fn}_words() {{
  case "$1" in
{words}
  esac
}}
{fn}_subcommands() {{
  case "$1" in
{subcommands}
  esac
}}
{fn}_choices() {{
  case "$1" in
{option_choices}
  esac
}}
{fn}() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" path="" w i values
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    case " $({fn}_subcommands "$path") " in *" $w "*) path="${{path:+$path }}$w" ;; esac
  done
  values="$({fn}_choices "$path|$prev")"
  [ -n "$values" ] || values="$({fn}_words "$path")"
  COMPREPLY=($(compgen -W "$values" -- "$cur"))
}}
complete -o default -F {fn} {prog}
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def _walk(parser: argparse.ArgumentParser, path: str, levels: dict, choices: dict) -> None:
    subs, opts = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                subs.append(name)
                _walk(sub, f"{path} {name}".strip(), levels, choices)
        elif action.option_strings:
            opts += action.option_strings
            if action.choices:
                for option in action.option_strings:
                    choices[(path, option)] = [str(c) for c in action.choices]
        elif action.choices:  # a positional with choices (the shell of `completion`): offered as words
            opts += [str(c) for c in action.choices]
    levels[path] = (subs, opts)


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Let argcomplete answer the shell when it is installed and the shell is asking; else nothing."""
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)  # exits after answering
