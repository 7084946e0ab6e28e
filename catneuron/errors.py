"""The one exception type whose message is shown to users as is, and how untrusted text is shown."""


class UserError(ValueError):
    """Bad input from a user (a flag, a file, a config): the CLI prints the message on one line and exits 2.
    A ValueError, so library callers catch it as they catch any bad argument."""


def printable(text: str) -> str:
    """`text` (a file name, say) on one line of plain characters: tabs, newlines and terminal escape codes as
    backslash escapes, bytes that are not UTF-8 (os.fsdecode's surrogates) as \\xNN, backslashes doubled.
    A row of a TSV file stays one row, and a name cannot drive the terminal that shows it."""
    out = []
    for c in text:
        if 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\" or not c.isprintable():
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)
