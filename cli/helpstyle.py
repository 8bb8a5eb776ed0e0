"""Help that names what to type (CONTRACT §7): `TASK`, `DURATION`, `KEY`, never `<str>` or `{lookup}`.

typer (0.16+) prints every argument as `name <type>` and a required one as `{name}` in the usage line, even
when the argument has a metavar. Where a metavar is given it already says what to type, so the type label is
dropped and the usage shows the metavar as is (`flowledger tasks show [OPTIONS] TASK`). Guarded: an older or
newer typer without these hooks keeps its own rendering.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    from typer import core

    argument = getattr(core, "TyperArgument", None)
    if argument is None or not hasattr(argument, "display_type_rich") or not hasattr(argument,
                                                                                   "_usage_display_name"):
        return
    display_type = argument.display_type_rich
    usage_name = argument._usage_display_name

    def named_display_type(self: Any, ctx: Any) -> str | None:
        return None if self.metavar else display_type(self, ctx)

    def named_usage(self: Any) -> str:
        if not self.metavar:
            return usage_name(self)  # type: ignore[no-any-return]
        return self.metavar if self.required else f"[{self.metavar}]"

    argument.display_type_rich = named_display_type
    argument._usage_display_name = named_usage
