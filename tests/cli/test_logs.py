"""The library logs; the command shows those lines as they were written: notices on stdout, warnings on stderr."""

import logging

from catneuron.cli.logs import show_library_lines


def test_library_lines_reach_the_terminal_unchanged(capsys):
    show_library_lines()
    show_library_lines()  # once per process, however many commands run in it
    logging.getLogger("catneuron.data.sources").info("catneuron: skipped 2 unreadable image(s) under pics")
    logging.getLogger("catneuron.data.shards").warning("catneuron: shard a.tar: cut short; skipping the rest of it")
    logging.getLogger("catneuron.train.watch").debug("not for the terminal")
    out = capsys.readouterr()
    assert out.out == "catneuron: skipped 2 unreadable image(s) under pics\n"
    assert out.err == "catneuron: shard a.tar: cut short; skipping the rest of it\n"
