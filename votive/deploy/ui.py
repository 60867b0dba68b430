"""What a deploy tells the person running it: one line per step on stderr, upload progress on one line."""

from __future__ import annotations


class ConsoleUi:
    """Progress for a person: one line per step on stderr, and upload progress on one rewritten line."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stderr
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._shown: tuple[str, int] | None = None  # (label, percent) last drawn: redraw only on a change

    def say(self, message: str) -> None:
        print(f"votive: {message}", file=self.stream, flush=True)

    def progress(self, label: str, done: int, total: int) -> None:
        """Called as bytes go out; on a terminal the line is redrawn, elsewhere only the end is printed."""
        percent = 100 if total == 0 else done * 100 // total
        if self._shown == (label, percent):
            return
        self._shown = (label, percent)
        if self._tty:
            end = "\n" if done >= total else ""
            print(f"\rvotive: uploading {label}: {percent:3d}% of {total / 2**20:.1f} MiB", end=end,
                  file=self.stream, flush=True)
        elif done >= total:
            self.say(f"uploaded {label} ({total / 2**20:.1f} MiB)")
